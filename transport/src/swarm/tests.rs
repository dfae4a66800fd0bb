//! The gossipsub configuration the presets build.

use super::behaviour::gossipsub_config;
use crate::{Config, IDONTWANT_THRESHOLD};

#[test]
fn both_presets_send_idontwant_for_pushes_also_on_publish_and_keep_their_mesh() {
    for config in [Config::small_cluster(), Config::large_mesh()] {
        let built = gossipsub_config(&config).expect("a preset builds");
        let g = &config.gossip;
        assert_eq!(
            built.idontwant_message_size_threshold(),
            IDONTWANT_THRESHOLD
        );
        assert!(built.idontwant_on_publish());
        assert_eq!(
            (built.mesh_n(), built.mesh_n_low(), built.mesh_n_high()),
            (g.mesh_n, g.mesh_n_low, g.mesh_n_high)
        );
        assert_eq!(built.flood_publish(), g.flood_publish);
    }
    // Below a push (about 310 payload bytes), above an advert (about 170) with its framing.
    assert!((200..300).contains(&IDONTWANT_THRESHOLD));
}
