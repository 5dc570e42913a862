//! How personal data reads in an audit: masked while the account's data key opens it,
//! `erased` once the key is gone, `unreadable` when it cannot be opened (never the
//! cause: it could echo the datum), and `recorded` for a unionid that event version 1
//! kept in clear (read as its hash only). The client IP shows in full until erasure:
//! auditors ask "from where".

use miniauth_domain::phone::mask_digits;
use miniauth_domain::{AccountId, PersonalField, SealedDatum, SealedUnionId};

use crate::ports::PersonalDataVault;

/// What personal data reads as after the account's erasure.
pub const ERASED: &str = "erased";
/// What personal data reads as when its sealed form cannot be opened.
pub const UNREADABLE: &str = "unreadable";
/// What a unionid that event version 1 kept in clear reads as (only its hash is read).
pub const RECORDED: &str = "recorded";

/// Opens one account's sealed data for display.
pub(crate) struct Reveal<'a> {
    pub vault: &'a dyn PersonalDataVault,
    pub account: &'a AccountId,
}

impl Reveal<'_> {
    /// Opens `sealed` and masks it with `mask`; `erased` once the data key is gone.
    async fn open(
        &self,
        field: PersonalField,
        sealed: &SealedDatum,
        mask: impl FnOnce(&str) -> String,
    ) -> String {
        match self
            .vault
            .unseal_personal(self.account, field, sealed)
            .await
        {
            Ok(Some(plain)) => mask(&plain),
            Ok(None) => ERASED.to_owned(),
            Err(_) => UNREADABLE.to_owned(),
        }
    }

    /// A phone: `+86 138****8000`.
    pub async fn phone(&self, country_code: &str, sealed: &SealedDatum) -> String {
        self.open(PersonalField::Phone, sealed, |digits| {
            format!("+{country_code} {}", mask_digits(digits))
        })
        .await
    }

    /// A nickname: its first character.
    pub async fn nickname(&self, sealed: &SealedDatum) -> String {
        self.open(PersonalField::Nickname, sealed, mask_nickname)
            .await
    }

    /// A unionid: its ends, `erased`, or `recorded`.
    pub async fn unionid(&self, unionid: &SealedUnionId, erased: bool) -> String {
        match (&unionid.sealed, erased) {
            (_, true) => ERASED.to_owned(),
            (Some(sealed), false) => self.open(PersonalField::UnionId, sealed, mask_id).await,
            (None, false) => RECORDED.to_owned(),
        }
    }

    /// A client IP in full, or `erased`. Events of earlier releases kept it in clear:
    /// shown until the account is erased.
    pub async fn client_ip(&self, stored: &str, erased: bool) -> String {
        if erased {
            return ERASED.to_owned();
        }
        if stored.parse::<std::net::IpAddr>().is_ok() {
            return stored.to_owned();
        }
        let sealed = SealedDatum::from_sealed_text(stored.to_owned());
        self.open(PersonalField::ClientIp, &sealed, str::to_owned)
            .await
    }
}

/// Keeps the first three and last two characters of an id.
pub fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len().max(1));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}****{tail}")
}

/// Keeps the first character of a nickname and hides the rest.
pub fn mask_nickname(nickname: &str) -> String {
    let count = nickname.chars().count();
    match nickname.chars().next() {
        Some(first) if count > 1 => format!("{first}{}", "*".repeat(count - 1)),
        _ => "*".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_only_their_ends() {
        assert_eq!(mask_id("oUnion1234567"), "oUn****67");
        assert_eq!(mask_id("abc"), "***");
    }

    #[test]
    fn nicknames_keep_only_their_first_character() {
        assert_eq!(mask_nickname("张三丰"), "张**");
        assert_eq!(mask_nickname("Bob"), "B**");
        assert_eq!(mask_nickname("x"), "*");
        assert_eq!(mask_nickname(""), "*");
    }
}
