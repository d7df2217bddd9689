//! The benchmark shops stay valid configurations for the generated stream.

use std::path::Path;

#[test]
fn the_outlet_shop_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shops/outlet");
    match journeys::load(&dir) {
        Ok(config) => assert_eq!(config.journeys.len(), 5),
        Err(e) => panic!("shops/outlet is invalid: {e:?}"),
    }
}
