//! Random key material.

use rand::rngs::OsRng;
use rand::RngCore;

/// 32 bytes from the operating system's CSPRNG, e.g. a fresh ticket key
/// ([`crate::HmacTicketCodec::new`]) when none is configured.
pub fn random_key_32() -> [u8; 32] {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random() {
        let a = random_key_32();
        let b = random_key_32();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
