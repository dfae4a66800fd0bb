//! The setup endpoint's gate: which client certificates may hold a connection to the setup
//! endpoint past its TLS handshake.
//!
//! Every certificate the cluster CA issued passes the endpoint's TLS: joining bundles' (also
//! used, superseded and expired ones), admin users' (also revoked ones) and nodes'. But the
//! endpoint serves joins only (delegation runs over the mesh), so the only certificate with
//! business there is the **current** joining bundle's, while it is **unused**, **unexpired**
//! and **not revoked**. [`decide`] says so, purely (time is an argument); the endpoint closes
//! any other connection at once with the reason (the daemon hands it to the transport's `Gate`), so a
//! flood of old bundles or admin certificates holds no slot past a handshake. The join
//! protocol ([`crate::join`]) checks the bundle again on every request: the gate only decides
//! who may hold a connection.
//!
//! [`SetupGate`] holds what [`decide`] needs (the current bundle's state and the revoked
//! serials); the daemon refreshes it from its store at start, after every command and setup
//! request (so a new bundle is let through before `bundle create` answers) and on every tick
//! (revocations that arrive from the leader).

use std::sync::{Mutex, MutexGuard, PoisonError};

use sha2::{Digest as _, Sha256};

use crate::certs::{Revoked, Serial};
use crate::join::{BUNDLE_CN_PREFIX, BundleState, JoinRefusal, check_bundle};
use crate::store::HighWater;

/// Why the gate closed a connection. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    /// The certificate does not parse (it passed TLS, so this should not happen).
    #[error(
        "the client certificate does not parse; use the bundle file `meshward bundle create` wrote"
    )]
    Unreadable,
    /// Its serial is revoked.
    #[error(
        "certificate serial {0} is revoked; to join, create a new bundle on the leader with \
         `meshward bundle create`"
    )]
    Revoked(Serial),
    /// It is not a joining bundle's certificate (an admin user's or a node's).
    #[error(
        "this certificate is not a joining bundle's: the setup endpoint serves joins only; \
         create a bundle on the leader with `meshward bundle create`"
    )]
    NotABundle,
    /// It is a bundle's, but not one that may join now (superseded, used or expired).
    #[error(transparent)]
    Bundle(#[from] JoinRefusal),
}

/// Whether the client certificate `cert` (DER, verified to chain to the cluster CA) may hold
/// a setup connection at `now_ms`, given the current `bundle` and the `revoked` serials.
pub fn decide(
    now_ms: u64,
    cert: &[u8],
    bundle: Option<&BundleState>,
    revoked: &Revoked,
) -> Result<(), GateRefusal> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|_| GateRefusal::Unreadable)?;
    let serial = Serial::from_der_integer(parsed.raw_serial());
    if revoked.revoked_at(&serial).is_some() {
        return Err(GateRefusal::Revoked(serial));
    }
    let fingerprint: [u8; 32] = Sha256::digest(cert).into();
    let named_bundle = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .is_some_and(|cn| cn.starts_with(BUNDLE_CN_PREFIX));
    if !named_bundle && bundle.is_none_or(|b| b.cert != fingerprint) {
        return Err(GateRefusal::NotABundle);
    }
    check_bundle(now_ms, fingerprint, bundle)?;
    Ok(())
}

/// What the gate decides on, shared between the daemon (which refreshes it) and the setup
/// endpoint's tasks (which ask it).
#[derive(Debug, Default)]
pub struct SetupGate {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    bundle: Option<BundleState>,
    /// The stored chain's high-water mark when `revoked` was folded.
    chain: Option<HighWater>,
    revoked: Revoked,
}

impl SetupGate {
    /// Whether the revoked serials were last taken from the chain whose high-water mark is
    /// `chain` (then [`SetupGate::update`] needs none).
    pub fn knows(&self, chain: Option<HighWater>) -> bool {
        self.lock().chain == chain
    }

    /// Takes the current `bundle`, and the `revoked` serials of the chain at `chain` (`None`:
    /// unchanged).
    pub fn update(
        &self,
        bundle: Option<BundleState>,
        chain: Option<HighWater>,
        revoked: Option<Revoked>,
    ) {
        let mut state = self.lock();
        state.bundle = bundle;
        if let Some(revoked) = revoked {
            state.chain = chain;
            state.revoked = revoked;
        }
    }

    /// [`decide`] on the wall clock and the state of the last update.
    pub fn check(&self, cert: &[u8]) -> Result<(), GateRefusal> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let state = self.lock();
        decide(now_ms, cert, state.bundle.as_ref(), &state.revoked)
    }

    /// Each update replaces whole fields, so a panic while it was held leaves it usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use meshward_crdt::ClusterId;

    use super::*;
    use crate::pki::Ca;

    const NOW: u64 = 1_800_000_000_000;

    fn ca() -> Ca {
        Ca::create(ClusterId([3; 16]), SystemTime::now()).expect("a CA")
    }

    fn issue(ca: &Ca, cn: &str) -> Vec<u8> {
        let now = SystemTime::now();
        ca.issue_client(cn, now, now + Duration::from_secs(3600))
            .expect("a certificate")
            .cert
    }

    fn state(cert: &[u8]) -> BundleState {
        BundleState {
            id: [1; 16],
            cert: Sha256::digest(cert).into(),
            expires_at_ms: NOW + 1000,
            used_by: None,
        }
    }

    fn revoked(certs: &[&[u8]]) -> Revoked {
        Revoked::of(
            certs
                .iter()
                .map(|c| Serial::of_certificate(c).expect("a serial")),
        )
    }

    #[test]
    fn only_the_current_unused_unexpired_bundle_passes() {
        let ca = ca();
        let current = issue(&ca, &format!("{BUNDLE_CN_PREFIX}01"));
        let old = issue(&ca, &format!("{BUNDLE_CN_PREFIX}00"));
        let admin = issue(&ca, "alice");
        let bundle = state(&current);
        let none = Revoked::default();
        assert_eq!(decide(NOW, &current, Some(&bundle), &none), Ok(()));
        assert_eq!(
            decide(NOW, &old, Some(&bundle), &none),
            Err(GateRefusal::Bundle(JoinRefusal::Superseded))
        );
        assert_eq!(
            decide(NOW, &admin, Some(&bundle), &none),
            Err(GateRefusal::NotABundle)
        );
        assert_eq!(
            decide(NOW, &admin, None, &none),
            Err(GateRefusal::NotABundle)
        );
        assert_eq!(
            decide(NOW, &current, None, &none),
            Err(GateRefusal::Bundle(JoinRefusal::NoBundle))
        );
        let used = BundleState {
            used_by: Some([9; 32]),
            ..bundle.clone()
        };
        assert_eq!(
            decide(NOW, &current, Some(&used), &none),
            Err(GateRefusal::Bundle(JoinRefusal::Reused))
        );
        assert!(matches!(
            decide(NOW + 1000, &current, Some(&bundle), &none),
            Err(GateRefusal::Bundle(JoinRefusal::Expired { .. }))
        ));
    }

    #[test]
    fn a_revoked_certificate_is_refused_whatever_it_is() {
        let ca = ca();
        let current = issue(&ca, &format!("{BUNDLE_CN_PREFIX}01"));
        let admin = issue(&ca, "mallory");
        let list = revoked(&[&current, &admin]);
        let bundle = state(&current);
        for cert in [&current, &admin] {
            let refused = decide(NOW, cert, Some(&bundle), &list).unwrap_err();
            assert!(matches!(refused, GateRefusal::Revoked(_)), "{refused}");
            assert!(refused.to_string().contains("is revoked"), "{refused}");
        }
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        let none = Revoked::default();
        for bytes in [&b""[..], &[0x30, 0x82, 0xff, 0xff], &[0u8; 300]] {
            assert_eq!(
                decide(NOW, bytes, None, &none),
                Err(GateRefusal::Unreadable)
            );
        }
    }

    #[test]
    fn the_gate_follows_its_updates() {
        let ca = ca();
        let first = issue(&ca, &format!("{BUNDLE_CN_PREFIX}01"));
        let second = issue(&ca, &format!("{BUNDLE_CN_PREFIX}02"));
        let far = |cert: &[u8]| BundleState {
            expires_at_ms: u64::MAX,
            ..state(cert)
        };
        let gate = SetupGate::default();
        assert!(gate.check(&first).is_err(), "no bundle yet");
        assert!(gate.knows(None));
        gate.update(Some(far(&first)), None, None);
        assert_eq!(gate.check(&first), Ok(()));
        gate.update(Some(far(&second)), None, None);
        assert_eq!(
            gate.check(&first),
            Err(GateRefusal::Bundle(JoinRefusal::Superseded))
        );
        assert_eq!(gate.check(&second), Ok(()));
        let chain = Some(HighWater {
            epoch: 1,
            version: 2,
            hash: meshward_crdt::mastered::RecordHash([0; 32]),
        });
        assert!(!gate.knows(chain));
        gate.update(Some(far(&second)), chain, Some(revoked(&[&second])));
        assert!(gate.knows(chain));
        assert!(matches!(gate.check(&second), Err(GateRefusal::Revoked(_))));
    }
}
