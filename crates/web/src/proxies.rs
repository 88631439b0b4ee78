//! Trusted proxies: whose `X-Forwarded-For` is believed when deciding who the client is.

use axum::http::HeaderMap;

/// The proxies (load balancers) whose `X-Forwarded-For` is believed: CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(std::net::IpAddr, u8)>);

impl TrustedProxies {
    /// `10.0.0.0/8,192.168.1.7` (a bare address is one host).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = item.split_once('/').unwrap_or((item, ""));
            let ip: std::net::IpAddr = addr.parse().map_err(|_| format!("`{item}` is not an address or CIDR block"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = if bits.is_empty() { max } else { bits.parse().map_err(|_| format!("`{item}`: bad prefix"))? };
            if bits > max {
                return Err(format!("`{item}`: the prefix is longer than the address"));
            }
            out.push((ip, bits));
        }
        Ok(Self(out))
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
            _ => false,
        })
    }

    /// The client's address: the peer, unless the peer is a trusted proxy; then the nearest address
    /// in `X-Forwarded-For` that is not a trusted proxy (what the client itself wrote further left
    /// cannot be believed).
    pub fn client_ip(&self, peer: std::net::IpAddr, headers: &HeaderMap) -> std::net::IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        // From the right: each trusted proxy appended the address it was talking to, so the first
        // address that is not a trusted proxy is the client, and whatever stands left of it was
        // written by the client. An entry that does not parse ends the walk at the last hop known.
        let mut client = peer;
        for entry in entries.iter().rev() {
            match entry.parse::<std::net::IpAddr>() {
                Ok(ip) if self.contains(ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => return client,
            }
        }
        client
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self.0.iter().map(|(ip, bits)| format!("{ip}/{bits}")).collect();
        f.write_str(&items.join(","))
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_address() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7,::1").unwrap();
        let ip = |s: &str| s.parse().unwrap();
        // An untrusted peer's header is ignored.
        assert_eq!(t.client_ip(ip("203.0.113.9"), &xff("1.2.3.4")), ip("203.0.113.9"));
        // Through one trusted proxy.
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff("198.51.100.4")), ip("198.51.100.4"));
        // A client that forges the left of the header does not choose its address.
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff("1.1.1.1, 198.51.100.4, 192.168.1.7")), ip("198.51.100.4"));
        // A trusted peer without the header is the client.
        assert_eq!(t.client_ip(ip("::1"), &HeaderMap::new()), ip("::1"));
        assert!(t.contains(ip("10.255.0.1")) && !t.contains(ip("11.0.0.1")) && !t.contains(ip("192.168.1.8")));
        // Junk the client writes does not stop the walk before the address a trusted proxy added
        // (the parse used to stop at the first entry it could not read and take what was left of it).
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff("1.1.1.1, junk, 198.51.100.4")), ip("198.51.100.4"));
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff("1.1.1.1, junk")), ip("10.1.2.3"));
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff("1.1.1.1, junk, 10.9.9.9")), ip("10.9.9.9"));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err() && TrustedProxies::parse("nope").is_err());
    }
}
