//! The users a distribution has met so far in its file, to tell `DUPLICATE_IN_FILE` from
//! `LIMIT_REACHED`. A million-user file keeps a million ids here, so they are stored as one
//! sorted `Vec<i64>` (8 bytes per user, sized once from the row count) instead of a hash set
//! (≈ 18 bytes per user plus a doubling spike on growth); only the batch in hand is hashed.

use std::collections::HashSet;

pub struct SeenUsers {
    /// Users of earlier batches: sorted, distinct.
    earlier: Vec<i64>,
    /// Users of the current batch that are not in `earlier`.
    batch: HashSet<i64>,
}

impl SeenUsers {
    /// `expected`: about how many rows the file has (the list never reallocates below it).
    pub fn with_capacity(expected: usize) -> Self {
        Self {
            earlier: Vec::with_capacity(expected),
            batch: HashSet::new(),
        }
    }

    /// Records `user`; `true` when it was met before (in an earlier batch or earlier in this
    /// one).
    pub fn insert(&mut self, user: i64) -> bool {
        self.earlier.binary_search(&user).is_ok() || !self.batch.insert(user)
    }

    /// Folds the current batch into the sorted list; call at every batch boundary.
    pub fn end_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut add: Vec<i64> = self.batch.drain().collect();
        add.sort_unstable();
        // Merge from the back, in place: no second copy of the list.
        let old = self.earlier.len();
        self.earlier.resize(old + add.len(), 0);
        let (mut i, mut j, mut k) = (old, add.len(), self.earlier.len());
        while j > 0 {
            if i > 0 && self.earlier[i - 1] > add[j - 1] {
                self.earlier[k - 1] = self.earlier[i - 1];
                i -= 1;
            } else {
                self.earlier[k - 1] = add[j - 1];
                j -= 1;
            }
            k -= 1;
        }
    }

    /// Distinct users recorded.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.earlier.len() + self.batch.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn answers_exactly_like_a_hash_set(
            users in proptest::collection::vec(0i64..200, 0..400),
            batch in 1usize..50,
        ) {
            let mut seen = SeenUsers::with_capacity(users.len());
            let mut oracle = HashSet::new();
            for (n, u) in users.iter().enumerate() {
                prop_assert_eq!(seen.insert(*u), !oracle.insert(*u));
                if (n + 1) % batch == 0 {
                    seen.end_batch();
                }
            }
            seen.end_batch();
            prop_assert_eq!(seen.len(), oracle.len());
            prop_assert!(seen.earlier.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
