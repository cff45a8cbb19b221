//! The k3s stand-in for test-rack nodes (see `xtask::k3s_standin`): install it
//! as `/usr/local/bin/k3s`.

fn main() {
    std::process::exit(xtask::k3s_standin::main());
}
