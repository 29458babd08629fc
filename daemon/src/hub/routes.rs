//! Routes: upstream APIs registered by wrapped commands that had an `ANTHROPIC_BASE_URL` of their
//! own (a company gateway, a regional endpoint, a LiteLLM proxy), so that their traffic goes where
//! it went before — paced. A route is registered over the socket by a local client, never by an
//! HTTP request, so the gateway cannot be made an open proxy: a request naming a route nobody
//! registered is refused.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use pacer_protocol::message::RouteStatus;
use reqwest::Url;

use crate::config::{BadUrl, MAX_ROUTE_URL, http_url, shown_url};
use pacer_broker::TimeBase;

/// A route nobody has used for this long is forgotten.
pub const ROUTE_IDLE_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// The most routes kept; registering one more forgets the least recently used, if it has been
/// idle for [`ROUTE_EVICT_IDLE`] (a route in use is never taken from its clients).
pub const MAX_ROUTES: usize = 256;
pub const ROUTE_EVICT_IDLE: Duration = Duration::from_secs(3600);
/// The most client names remembered per route (for `pacer status`).
const MAX_CLIENTS: usize = 32;

#[derive(Debug, Clone)]
struct Route {
    upstream: Url,
    clients: BTreeSet<String>,
    last_used: Instant,
}

#[derive(Debug, Default)]
pub struct Routes {
    by_id: BTreeMap<String, Route>,
}

/// Why an upstream cannot be a route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Url(#[from] BadUrl),
    #[error(
        "pacerd keeps at most {MAX_ROUTES} routes, and every one was used within the last hour"
    )]
    Full,
}

/// The upstream a client asks to register, if it can be a route.
pub fn check_upstream(text: &str) -> Result<Url, BadUrl> {
    if text.len() > MAX_ROUTE_URL {
        return Err(BadUrl::TooLong(text.len()));
    }
    http_url(text, "http(s)://host[:port][/path]")
}

impl Routes {
    /// Registers `upstream` for `client`; an upstream registered before keeps its id. When the
    /// table is full, the least recently used route goes if it has been idle for an hour;
    /// otherwise the registration is refused (a route in use keeps working).
    pub fn register(
        &mut self,
        upstream: Url,
        client: &str,
        now: Instant,
    ) -> Result<String, RouteError> {
        self.forget_idle(now);
        let known = self
            .by_id
            .iter()
            .find(|(_, route)| route.upstream == upstream)
            .map(|(id, _)| id.clone());
        let id = match known {
            Some(id) => id,
            None => {
                if self.by_id.len() >= MAX_ROUTES {
                    let oldest = self
                        .by_id
                        .iter()
                        .min_by_key(|(_, route)| route.last_used)
                        .filter(|(_, route)| {
                            now.saturating_duration_since(route.last_used) >= ROUTE_EVICT_IDLE
                        })
                        .map(|(id, _)| id.clone());
                    match oldest {
                        Some(oldest) => {
                            self.by_id.remove(&oldest);
                        }
                        None => return Err(RouteError::Full),
                    }
                }
                let id = self.new_id(&upstream);
                self.by_id.insert(
                    id.clone(),
                    Route {
                        upstream,
                        clients: BTreeSet::new(),
                        last_used: now,
                    },
                );
                id
            }
        };
        self.touch(&id, client, now);
        Ok(id)
    }

    /// The upstream of route `id`, noting that `client` used it; `None` if nobody registered it
    /// (or it was forgotten).
    pub fn resolve(&mut self, id: &str, client: &str, now: Instant) -> Option<Url> {
        let route = self.by_id.get(id)?;
        if now.saturating_duration_since(route.last_used) > ROUTE_IDLE_LIMIT {
            self.by_id.remove(id);
            return None;
        }
        let upstream = route.upstream.clone();
        self.touch(id, client, now);
        Some(upstream)
    }

    fn touch(&mut self, id: &str, client: &str, now: Instant) {
        if let Some(route) = self.by_id.get_mut(id) {
            route.last_used = now;
            if route.clients.len() < MAX_CLIENTS && !client.is_empty() {
                route.clients.insert(client.to_owned());
            }
        }
    }

    fn forget_idle(&mut self, now: Instant) {
        self.by_id
            .retain(|_, route| now.saturating_duration_since(route.last_used) <= ROUTE_IDLE_LIMIT);
    }

    /// A new id, unguessable enough that a made-up one finds nothing.
    fn new_id(&self, upstream: &Url) -> String {
        loop {
            let mut hasher = RandomState::new().build_hasher();
            hasher.write(upstream.as_str().as_bytes());
            hasher.write_usize(self.by_id.len());
            let id = format!(
                "{}{:012x}",
                pacer_protocol::gateway::ROUTE_PREFIX,
                hasher.finish() & 0xffff_ffff_ffff
            );
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn status(&self, time_base: &TimeBase) -> Vec<RouteStatus> {
        self.by_id
            .iter()
            .map(|(id, route)| RouteStatus {
                id: id.clone(),
                upstream: shown_url(&route.upstream),
                clients: route.clients.iter().cloned().collect(),
                last_used: time_base.to_wall(route.last_used),
            })
            .collect()
    }

    /// Routes to keep across a restart: those without credentials or a query in their URL
    /// (either may hold a secret, which the state file never does; their commands register
    /// again).
    pub fn saved(&self, time_base: &TimeBase) -> Vec<RouteStatus> {
        self.status(time_base)
            .into_iter()
            .filter(|saved| {
                self.by_id.get(&saved.id).is_some_and(|r| {
                    r.upstream.username().is_empty()
                        && r.upstream.password().is_none()
                        && r.upstream.query().is_none()
                })
            })
            .collect()
    }

    pub fn restore(&mut self, saved: Vec<RouteStatus>, time_base: &TimeBase) {
        for route in saved {
            let Ok(upstream) = check_upstream(&route.upstream) else {
                continue;
            };
            if !pacer_protocol::gateway::is_route_id(&route.id) || self.by_id.len() >= MAX_ROUTES {
                continue;
            }
            self.by_id.insert(
                route.id,
                Route {
                    upstream,
                    clients: route.clients.into_iter().take(MAX_CLIENTS).collect(),
                    last_used: time_base.to_instant(route.last_used),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        check_upstream(text).unwrap()
    }

    #[test]
    fn an_upstream_keeps_its_id_and_unknown_ids_find_nothing() {
        let mut routes = Routes::default();
        let now = Instant::now();
        let a = routes
            .register(url("https://proxy.example.com/anthropic"), "claude-1", now)
            .unwrap();
        let again = routes
            .register(url("https://proxy.example.com/anthropic"), "claude-2", now)
            .unwrap();
        assert_eq!(a, again);
        assert!(pacer_protocol::gateway::is_route_id(&a));
        let b = routes
            .register(url("http://127.0.0.1:9000"), "job", now)
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(
            routes.resolve(&a, "claude-3", now).unwrap().as_str(),
            "https://proxy.example.com/anthropic"
        );
        assert_eq!(routes.resolve("rt000000000000", "x", now), None);
    }

    #[test]
    fn idle_routes_are_forgotten_and_their_number_is_bounded() {
        let mut routes = Routes::default();
        let t0 = Instant::now();
        let id = routes.register(url("http://a.example"), "c", t0).unwrap();
        assert_eq!(
            routes.resolve(&id, "c", t0 + ROUTE_IDLE_LIMIT + Duration::from_secs(1)),
            None
        );
        for i in 0..MAX_ROUTES {
            routes
                .register(
                    url(&format!("http://host-{i}.example")),
                    "c",
                    t0 + Duration::from_secs(i as u64),
                )
                .unwrap();
        }
        // Full, and every route used within the hour: the next is refused, none is taken away.
        let later = t0 + Duration::from_secs(MAX_ROUTES as u64 + 10);
        let refused = routes.register(url("http://one-more.example"), "c", later);
        assert!(matches!(refused, Err(RouteError::Full)));
        assert!(RouteError::Full.to_string().contains("at most 256 routes"));
        assert_eq!(routes.by_id.len(), MAX_ROUTES);
        // An hour on, the least recently used goes for a new one.
        let much_later = t0 + ROUTE_EVICT_IDLE + Duration::from_secs(1);
        routes
            .register(url("http://one-more.example"), "c", much_later)
            .unwrap();
        assert_eq!(routes.by_id.len(), MAX_ROUTES);
        assert!(
            !routes
                .by_id
                .values()
                .any(|r| r.upstream.as_str() == "http://host-0.example/")
        );
        assert!(check_upstream(&format!("http://a.example/{}", "x".repeat(3000))).is_err());
    }

    #[test]
    fn credentials_are_never_shown_nor_saved() {
        let mut routes = Routes::default();
        let now = Instant::now();
        let time_base = TimeBase {
            instant: now,
            wall: std::time::SystemTime::now(),
        };
        routes
            .register(
                url("https://user:secret@proxy.example.com/v?token=t0p"),
                "c",
                now,
            )
            .unwrap();
        routes
            .register(url("https://plain.example.com"), "c", now)
            .unwrap();
        let shown = routes.status(&time_base);
        assert!(
            shown
                .iter()
                .all(|r| !r.upstream.contains("secret") && !r.upstream.contains("t0p")),
            "{shown:?}"
        );
        let saved = routes.saved(&time_base);
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].upstream, "https://plain.example.com/");
        assert!(check_upstream("ftp://x").is_err());
        assert!(check_upstream("not a url").is_err());
    }
}
