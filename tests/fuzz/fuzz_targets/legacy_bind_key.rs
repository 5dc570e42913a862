//! GitEgg bind keys on arbitrary strings: `LegacyBindKeyCodec::decode` never panics, and
//! whatever it accepts is an identity that encodes back to a key decoding to the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use miniauth_security::LegacyBindKeyCodec;

fuzz_target!(|data: &[u8]| {
    let codec = LegacyBindKeyCodec::new(*b"gitegg01", *b"12345678");
    let text = String::from_utf8_lossy(data);
    if let Ok(identity) = codec.decode(&text) {
        let again = codec.encode(identity.as_str());
        assert_eq!(
            codec.decode(&again).map(|i| i.into_string()),
            Ok(identity.into_string())
        );
    }
    // Hex of the input: reaches DES and the padding check far more often than text.
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let _ = codec.decode(&hex);
});
