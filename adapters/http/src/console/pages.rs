//! The console's page frame and the pieces pages share. Everything is escaped by
//! maud; nothing is inline script or style (the Content-Security-Policy forbids it).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

/// The frame of every page: a skip link, the navigation (with the sign-out form when
/// signed in), the main region and the page's title as its first heading.
pub(crate) fn page(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · miniauth console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Console" {
                        span.brand { "miniauth console" }
                        @if let Some(csrf) = csrf {
                            ul {
                                li { a href="/console" { "Overview" } }
                                li { a href="/console/search" { "Search" } }
                                li { a href="/console/verify" { "Verify the log" } }
                                li { a href="/console/webhooks" { "Webhooks" } }
                            }
                            form.signout method="post" action="/console/sign-out" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page answered with `status`.
pub(crate) fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A message that screen readers announce as it appears.
pub(crate) fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

/// An error message, announced at once.
pub(crate) fn alert(text: &str) -> Markup {
    html! { p.alert role="alert" { (text) } }
}

/// The hidden form token every state-changing form carries.
pub(crate) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}
