//! [`Shared`]: a part of the cluster state that copies of the state share.
//!
//! The group publishes a copy of the whole state whenever it applied something, so the parts
//! that grow with the work (executors, buckets, tasks, jobs) are shared: a copy costs a pointer
//! per part, and a command copies only the parts it changes.

use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A part of the state that copies of the state share: a copy costs a pointer, and a change
/// copies the part first only while another copy still holds it. Serialized as the value.
///
/// # Examples
/// ```
/// use colony_runtime::consensus::Shared;
/// let mut a = Shared::new(vec![1, 2]);
/// let b = a.clone();
/// a.make_mut().push(3);
/// assert_eq!(*a, [1, 2, 3]);
/// assert_eq!(*b, [1, 2]);
/// assert!(!Shared::ptr_eq(&a, &b));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    /// Shares `value`.
    pub fn new(value: T) -> Self {
        Shared(Arc::new(value))
    }
}

impl<T> Shared<T> {
    /// Whether `a` and `b` are the same copy.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl<T: Clone> Shared<T> {
    /// The value, to change: copied first if another copy of the state holds it.
    pub fn make_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::new)
    }
}
