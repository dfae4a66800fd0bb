use proptest::prelude::*;
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;

use super::*;

fn bundle() -> JoiningBundle {
    crate::join::tests::sample_bundle()
}

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

#[test]
fn an_offer_sealed_to_a_code_opens_with_its_keys_only() {
    let keys = CodeKeys::generate("127.0.0.1:7400".into(), &mut rng(1));
    let code = JoiningCode::decode(&keys.code().encode()).unwrap();
    assert_eq!(code.pairing, "127.0.0.1:7400");
    let mek = Mek::generate(&mut rng(2));
    let offer = seal_offer(&code, &bundle().encode(), &mek, &mut rng(3));
    let (b, m) = keys.open(&offer).unwrap();
    assert_eq!(b, bundle());
    assert_eq!(m.to_hex(), mek.to_hex());
    // Another code's keys do not open it.
    let other = CodeKeys::generate("127.0.0.1:7400".into(), &mut rng(4));
    assert_eq!(other.open(&offer).unwrap_err(), CodeError::Offer);
    // Every altered byte is refused.
    for i in [0, 31, 32, 55, 56, offer.len() - 1] {
        let mut bad = offer.clone();
        bad[i] ^= 1;
        assert_eq!(keys.open(&bad).unwrap_err(), CodeError::Offer, "byte {i}");
    }
}

#[test]
fn who_knows_the_public_key_but_not_the_secret_cannot_make_an_offer() {
    let keys = CodeKeys::generate("127.0.0.1:7400".into(), &mut rng(1));
    let mut guessed = keys.code().clone();
    guessed.secret = [0; 16];
    let offer = seal_offer(
        &guessed,
        &bundle().encode(),
        &Mek::generate(&mut rng(2)),
        &mut rng(3),
    );
    assert_eq!(keys.open(&offer).unwrap_err(), CodeError::Offer);
    // Nor with the code's address changed (it is bound into the key).
    let mut moved = keys.code().clone();
    moved.pairing = "127.0.0.1:7401".into();
    let offer = seal_offer(
        &moved,
        &bundle().encode(),
        &Mek::generate(&mut rng(2)),
        &mut rng(3),
    );
    assert_eq!(keys.open(&offer).unwrap_err(), CodeError::Offer);
}

#[test]
fn mistyped_and_garbage_codes_say_what_is_wrong() {
    let keys = CodeKeys::generate("node2.example:7400".into(), &mut rng(1));
    let text = keys.code().encode();
    assert!(text.starts_with(CODE_PREFIX));
    assert!(!format!("{:?}", keys.code()).contains("secret"));
    let mut typo = text.to_string().into_bytes();
    let last = typo.len() - 10;
    typo[last] = if typo[last] == b'0' { b'1' } else { b'0' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(JoiningCode::decode(&typo).unwrap_err(), CodeError::Checksum);
    for bad in ["", "mwjc1-", "mwjc1-zz", "hello", "mwjc1-00"] {
        assert!(JoiningCode::decode(bad).is_err(), "{bad}");
    }
    assert!(JoiningCode::decode(&format!("{CODE_PREFIX}{}", "0".repeat(MAX_CODE))).is_err());
    assert!(JoiningCode::decode(&format!("  {}\n", text.as_str())).is_ok());
}

proptest! {
    #[test]
    fn garbage_codes_and_offers_never_panic(text in ".{0,300}", bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = JoiningCode::decode(&text);
        let _ = JoiningCode::decode(&format!("{CODE_PREFIX}{}", hex::encode(&bytes)));
        let keys = CodeKeys::generate("127.0.0.1:1".into(), &mut rng(9));
        prop_assert!(keys.open(&bytes).is_err());
    }
}
