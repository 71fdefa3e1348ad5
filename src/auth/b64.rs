//! Base64url without padding (RFC 7515, section 2), the encoding of JWT
//! parts: just enough to read a token's header and payload before its
//! signature is checked. Strict: no padding, no whitespace, and unused
//! trailing bits must be zero, so one token has one spelling.

/// Decodes `s`, or `None` if it is not canonical unpadded base64url.
pub(crate) fn decode_url(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

/// Encodes `bytes` as unpadded base64url (tests build hostile tokens with it).
#[cfg(test)]
pub(crate) fn encode_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode_url(&bytes);
            assert!(!text.contains('='));
            assert_eq!(decode_url(&text).as_deref(), Some(&bytes[..]), "{len}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(encode_url(b"{\"alg\":\"HS256\"}"), "eyJhbGciOiJIUzI1NiJ9");
        assert_eq!(
            decode_url("eyJhbGciOiJIUzI1NiJ9").unwrap(),
            b"{\"alg\":\"HS256\"}"
        );
        assert_eq!(encode_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn refuses_non_canonical_text() {
        assert_eq!(decode_url("ab=="), None, "padding");
        assert_eq!(decode_url("a"), None, "impossible length");
        assert_eq!(decode_url("ab+/"), None, "standard alphabet");
        assert_eq!(decode_url("ab c"), None, "whitespace");
        assert_eq!(decode_url("-_9"), None, "non-zero trailing bits");
        assert_eq!(decode_url(""), Some(vec![]));
    }
}
