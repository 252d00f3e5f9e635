//! Which client a request comes from, for the per-address login throttle.
//! Rules:
//! - The client is the connection's peer, unless that peer is one of the
//!   operator's trusted proxies (`login_trusted_proxies`): then it is the
//!   nearest address in `X-Forwarded-For` that is not a trusted proxy,
//!   reading the header from its end, where the proxies appended.
//! - Anything left of that address was written by the client itself and is
//!   never believed; from a peer that is not trusted the header is ignored.
//! - A trusted proxy that sent no usable header stands for its clients: they
//!   share its address (throttled together, rather than not at all).

use std::net::IpAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::app::AppState;

/// The header proxies append the address they received a request from to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The proxies in front of keyhold whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Each entry an address (`10.0.0.5`, `::1`) or a network (`10.0.0.0/8`).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| entry.trim())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!(
                            "'{}' is neither an IP address nor a network such as 10.0.0.0/8",
                            entry.chars().take(60).collect::<String>()
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        // Every X-Forwarded-For header, in order, as one list.
        let hops: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(address) => {
                    client = canonical(address);
                    if !self.trusts(address) {
                        break;
                    }
                }
                // Nothing left of a hop that cannot be read is believed.
                Err(_) => break,
            }
        }
        client
    }
}

/// An IPv4 address mapped into IPv6 is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// The client address of a request (see the rules above).
pub struct ClientAddress(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // `crate::serve` puts the peer on every request; a request without
        // one (served some other way) shares one address with all such
        // requests, throttled together rather than not at all.
        let peer = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map_or(
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                |ConnectInfo(a)| a.ip(),
            );
        Ok(Self(app.trusted_proxies.client(peer, &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(FORWARDED_FOR, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_header_is_believed_only_from_a_trusted_proxy_and_only_up_to_the_first_untrusted_hop() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), " 192.0.2.1 ".into()]).unwrap();
        let spoofed = headers(&["203.0.113.9"]);
        // Not a proxy: the header is the client's own words.
        assert_eq!(
            proxies.client(ip("198.51.100.7"), &spoofed),
            ip("198.51.100.7")
        );
        // A proxy: the address it appended.
        assert_eq!(proxies.client(ip("192.0.2.1"), &spoofed), ip("203.0.113.9"));
        // A chain of proxies: the nearest untrusted hop, not what the client wrote first.
        let chain = headers(&["1.1.1.1, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(proxies.client(ip("10.9.9.9"), &chain), ip("203.0.113.9"));
        // No header, or garbage at the end: the proxy stands for its clients.
        assert_eq!(
            proxies.client(ip("10.9.9.9"), &HeaderMap::new()),
            ip("10.9.9.9")
        );
        assert_eq!(
            proxies.client(ip("10.9.9.9"), &headers(&["203.0.113.9, nonsense"])),
            ip("10.9.9.9")
        );
        // Mapped IPv4 is IPv4, for the proxy and the client alike.
        assert_eq!(
            proxies.client(ip("::ffff:10.0.0.1"), &headers(&["::ffff:203.0.113.9"])),
            ip("203.0.113.9")
        );
        // None configured: nobody is believed.
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &spoofed),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn entries_are_addresses_or_networks() {
        assert!(TrustedProxies::parse(&["::1".into(), "fd00::/8".into()]).is_ok());
        let err = TrustedProxies::parse(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!(TrustedProxies::parse(&["proxy.example".into()]).is_err());
    }
}
