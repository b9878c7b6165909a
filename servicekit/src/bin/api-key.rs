//! `api-key`: makes a new random API key and prints it with the config line holding its
//! SHA-256, or (`--hash`) prints the hash of a key read from stdin.
//!
//! ```text
//! cargo run -q -p servicekit --bin api-key -- dashboard
//! printf %s "$KEY" | cargo run -q -p servicekit --bin api-key -- --hash
//! ```

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--hash" => {
            let mut key = String::new();
            if let Err(error) = std::io::stdin().read_to_string(&mut key) {
                eprintln!("api-key: reading stdin: {error}");
                return ExitCode::from(2);
            }
            // `echo` adds a newline that is not part of the key.
            println!(
                "{}",
                servicekit::auth::hash_key(key.trim_end_matches(['\n', '\r']))
            );
            ExitCode::SUCCESS
        }
        [name] if !name.starts_with('-') => match servicekit::auth::generate_key() {
            Ok(key) => {
                let hash = servicekit::auth::hash_key(&key);
                eprintln!("# the key: give it to {name}; it is not stored anywhere else");
                println!("{key}");
                eprintln!("# the config entry (under [security] / [server.security]):");
                eprintln!("api_keys = [{{ name = \"{name}\", sha256 = \"{hash}\" }}]");
                ExitCode::SUCCESS
            }
            Err(_) => {
                eprintln!("api-key: the system random generator failed");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: api-key NAME        make a key for NAME, print it and its config entry"
            );
            eprintln!("       api-key --hash      print the SHA-256 of the key on stdin");
            ExitCode::from(2)
        }
    }
}
