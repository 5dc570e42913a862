//! miniauth's security adapters: the signed tickets that stand for a WeChat session
//! (the mini program's bind key), JWT access tokens and their JWKS, the decoder of
//! bind keys minted by a GitEgg deployment (for a migration without logging everyone
//! out), an in-process attempt limiter, and the system clock.
//!
//! Nothing here puts key material, tickets or tokens into `Debug` output or error
//! messages.

mod clock;
mod jwt;
mod keys;
mod legacy;
mod limiter;
mod ticket;

pub use clock::SystemClock;
pub use jwt::{generate_ed25519_pkcs8, JwtAlgorithm, JwtIssuer, JwtKeyError, JwtSettings};
pub use keys::random_key_32;
pub use legacy::{LegacyBindKeyCodec, LegacyIdentity, LegacyKeyError, LEGACY_BIND_KEY_PREFIX};
pub use limiter::{LimiterSettingsError, MemoryAttemptLimiter, DEFAULT_MAX_KEYS};
pub use ticket::HmacTicketCodec;
