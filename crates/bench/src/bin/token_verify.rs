//! What a bearer token costs the server before any limit applies: `TokenKeys::verify` on a valid
//! token, on one with a forged signature (the full RSA verification), on an expired one and on one
//! that is not a token at all. Prints ns per check (median of 5 rounds) and checks per second per core.
//! Run: `cargo run --release -p bench --bin token_verify`.

use std::time::{Duration, Instant};

use identity::TokenKeys;
use web::Role;

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("token-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // A clock the bench moves: past the expired token's 5 s of leeway, well within the valid one's life.
    let clock = base::clock::ManualClock::new();
    let keys = TokenKeys::load_or_generate(&dir.join("key.pem"), "walletd", Duration::from_secs(900), clock.clone())?;
    let user = uuid::Uuid::now_v7();
    let address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let valid = keys.issue(user, address, &[Role::User], Duration::from_secs(900))?;
    // Another signature of the right length and a canonical encoding: its first character changed
    // (a changed last character can break the base64 padding and be refused before any RSA).
    let signature_at = valid.rfind('.').map_or(0, |i| i + 1);
    let mut forged = valid.clone();
    let first = if &valid[signature_at..=signature_at] == "A" { "B" } else { "A" };
    forged.replace_range(signature_at..=signature_at, first);
    let expired = keys.issue(user, address, &[Role::User], Duration::from_secs(0))?;
    clock.advance(time::Duration::seconds(6));
    let cases = [("valid", valid), ("forged signature", forged), ("expired", expired), ("garbage", "x.y.z".into())];
    println!("{:<18} {:>10} {:>14}", "token", "ns/check", "checks/s/core");
    for (name, token) in &cases {
        let mut rounds: Vec<f64> = (0..5)
            .map(|_| {
                let n = 2_000;
                let start = Instant::now();
                for _ in 0..n {
                    std::hint::black_box(keys.verify(std::hint::black_box(token)).is_ok());
                }
                start.elapsed().as_nanos() as f64 / f64::from(n)
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        let median = rounds[2];
        println!("{name:<18} {median:>10.0} {:>14.0}", 1e9 / median);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
