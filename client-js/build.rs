//! Build script: sets up linking for the Node addon.

fn main() {
    napi_build::setup();
}
