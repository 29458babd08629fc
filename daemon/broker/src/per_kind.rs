//! One value per limit kind (requests, input tokens, output tokens), indexed by [`LimitKind`]
//! rather than by bare numbers.

use std::ops::{Index, IndexMut};

use pacer_protocol::LimitKind;
use serde::{Deserialize, Serialize};

/// A value for each [`LimitKind`]. Serialized as a three-element array in [`LimitKind::ALL`]
/// order, which is what the state file has always held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerKind<T>([T; 3]);

impl<T> PerKind<T> {
    pub const fn new(requests: T, input_tokens: T, output_tokens: T) -> Self {
        Self([requests, input_tokens, output_tokens])
    }

    /// Builds each value from its kind.
    pub fn from_fn(mut f: impl FnMut(LimitKind) -> T) -> Self {
        Self(LimitKind::ALL.map(&mut f))
    }

    /// The same value for every kind.
    pub fn splat(value: T) -> Self
    where
        T: Clone,
    {
        Self::from_fn(|_| value.clone())
    }

    pub fn map<U>(self, mut f: impl FnMut(LimitKind, T) -> U) -> PerKind<U> {
        let mut kinds = LimitKind::ALL.into_iter();
        PerKind(
            self.0
                .map(|value| f(kinds.next().expect("three kinds"), value)),
        )
    }

    /// Each kind with its value, in [`LimitKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (LimitKind, &T)> {
        LimitKind::ALL.into_iter().zip(&self.0)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (LimitKind, &mut T)> {
        LimitKind::ALL.into_iter().zip(&mut self.0)
    }
}

impl<T> Index<LimitKind> for PerKind<T> {
    type Output = T;

    fn index(&self, kind: LimitKind) -> &T {
        &self.0[kind.index()]
    }
}

impl<T> IndexMut<LimitKind> for PerKind<T> {
    fn index_mut(&mut self, kind: LimitKind) -> &mut T {
        &mut self.0[kind.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LimitKind::*;

    #[test]
    fn indexed_by_kind_and_serialized_as_an_array() {
        let mut levels = PerKind::new(Some(1.5), None, Some(-2.0));
        levels[InputTokens] = Some(3.0);
        assert_eq!(levels[InputTokens], Some(3.0));
        assert_eq!(
            serde_json::to_string(&levels).unwrap(),
            "[1.5,3.0,-2.0]",
            "the state file's format"
        );
        let back: PerKind<Option<f64>> = serde_json::from_str("[1.5,null,-2.0]").unwrap();
        assert_eq!(back[Requests], Some(1.5));
        assert_eq!(back[InputTokens], None);
    }

    #[test]
    fn map_and_iter_follow_the_kind_order() {
        let names = PerKind::from_fn(LimitKind::short_name);
        assert_eq!(names[OutputTokens], "otpm");
        let lengths = names.map(|_, name| name.len());
        assert_eq!(lengths, PerKind::new(3, 4, 4));
        let kinds: Vec<LimitKind> = names.iter().map(|(kind, _)| kind).collect();
        assert_eq!(kinds, LimitKind::ALL);
    }
}
