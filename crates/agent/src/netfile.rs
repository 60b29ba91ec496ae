//! The simulated world's network file (contract in `crates/sim/src/faults.rs`): a file whose
//! content, ignoring surrounding whitespace, is `up` or `down`. `down` means the cluster's
//! network to the manager is cut: every dial fails and an open stream is dropped. Missing,
//! unreadable or any other content means `up`, so outside the simulation (no variable set)
//! nothing changes. The file is re-read before every dial and polled while a stream is open.

use std::path::Path;

/// Environment variable naming the network file (set by the simulated node runtime only).
pub const NETWORK_FILE_ENV: &str = "FLEDGE_SIM_NETWORK_FILE";

/// State of the network to the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Traffic to the manager works.
    Up,
    /// Traffic to the manager is cut.
    Down,
}

/// Parses the file's content: only `down` (trimmed) is a cut network.
pub fn parse(content: &str) -> Network {
    if content.trim() == "down" {
        Network::Down
    } else {
        Network::Up
    }
}

/// Reads the network file; no file (or no path) is [`Network::Up`].
pub fn read(path: Option<&Path>) -> Network {
    match path.map(std::fs::read_to_string) {
        Some(Ok(content)) => parse(&content),
        _ => Network::Up,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_down_is_a_cut_network() {
        assert_eq!(parse("down"), Network::Down);
        assert_eq!(parse("  down\n"), Network::Down);
        assert_eq!(parse("up\n"), Network::Up);
        assert_eq!(parse(""), Network::Up);
        assert_eq!(parse("DOWN"), Network::Up);
        assert_eq!(parse("downstream"), Network::Up);
    }

    #[test]
    fn a_missing_file_is_up_and_a_written_one_is_read_each_time() {
        let dir = std::env::temp_dir().join(format!("fledge-agent-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("network");
        assert_eq!(read(Some(&file)), Network::Up);
        assert_eq!(read(None), Network::Up);
        std::fs::write(&file, "down\n").unwrap();
        assert_eq!(read(Some(&file)), Network::Down);
        std::fs::write(&file, "up\n").unwrap();
        assert_eq!(read(Some(&file)), Network::Up);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
