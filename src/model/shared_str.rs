//! `SharedStr`: an immutable, reference-counted string behind a thin (8-byte) pointer.
//!
//! Every label of every series in the head holds two of these, so their size is the size of
//! a label: `Arc<str>` is a 16-byte fat pointer (address and length), this is 8 bytes, with
//! the length stored in the allocation next to the count. For a node_exporter-like series of
//! ten labels that is 160 bytes less per series (see docs/benchmarks.md, "Memory per active
//! series"). The allocation itself is the same size as an `Arc<str>`'s: a 16-byte header
//! (count, length) and the bytes.

use std::alloc::{self, Layout};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{self, AtomicUsize, Ordering};

/// The allocation's header; the string's bytes follow it.
#[repr(C)]
struct Header {
    count: AtomicUsize,
    len: usize,
}

/// An immutable shared string, 8 bytes wide. Clones share the bytes; the last drop frees them.
pub struct SharedStr(NonNull<Header>);

// SAFETY: the bytes are never mutated after construction and the count is atomic, exactly
// as for `Arc<str>`, which is `Send + Sync`.
unsafe impl Send for SharedStr {}
// SAFETY: as above.
unsafe impl Sync for SharedStr {}

impl SharedStr {
    fn layout(len: usize) -> Layout {
        Layout::new::<Header>()
            .extend(Layout::array::<u8>(len).expect("string length overflows a layout"))
            .expect("string length overflows a layout")
            .0
            .pad_to_align()
    }

    /// A new shared copy of `s`.
    pub fn new(s: &str) -> Self {
        let layout = Self::layout(s.len());
        // SAFETY: `layout` has a non-zero size (the header is 16 bytes).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<Header>()) else {
            alloc::handle_alloc_error(layout);
        };
        // SAFETY: `ptr` points to a fresh allocation of `layout`, which starts with room for
        // a `Header` (aligned: the layout's alignment is the header's) and has `s.len()`
        // bytes after it; the source and the new allocation cannot overlap.
        unsafe {
            ptr.as_ptr().write(Header {
                count: AtomicUsize::new(1),
                len: s.len(),
            });
            std::ptr::copy_nonoverlapping(
                s.as_ptr(),
                raw.add(std::mem::size_of::<Header>()),
                s.len(),
            );
        }
        SharedStr(ptr)
    }

    fn header(&self) -> &Header {
        // SAFETY: the allocation lives as long as any `SharedStr` refers to it, and this one
        // holds a count.
        unsafe { self.0.as_ref() }
    }

    /// How many `SharedStr`s share these bytes (as `Arc::strong_count`).
    pub fn strong_count(this: &Self) -> usize {
        this.header().count.load(Ordering::Acquire)
    }

    /// Whether both refer to the same allocation.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.0 == b.0
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        let len = self.header().len;
        // SAFETY: `new` copied `len` bytes of a `&str` (valid UTF-8) right after the header,
        // and nothing writes them afterwards; they live as long as `self`.
        unsafe {
            let bytes = std::slice::from_raw_parts(
                self.0
                    .as_ptr()
                    .cast::<u8>()
                    .add(std::mem::size_of::<Header>()),
                len,
            );
            std::str::from_utf8_unchecked(bytes)
        }
    }
}

impl Clone for SharedStr {
    fn clone(&self) -> Self {
        // Relaxed, as in `Arc::clone`: a new reference can only be made from an existing
        // one, which keeps the allocation alive.
        let old = self.header().count.fetch_add(1, Ordering::Relaxed);
        // As `Arc`: a count this high can only come from leaked clones; abort rather than
        // risk wrapping to zero.
        if old > isize::MAX as usize {
            std::process::abort();
        }
        SharedStr(self.0)
    }
}

impl Drop for SharedStr {
    fn drop(&mut self) {
        if self.header().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // As `Arc::drop`: every other owner's use happens before the free.
        atomic::fence(Ordering::Acquire);
        let layout = Self::layout(self.header().len);
        // SAFETY: this was the last reference; the allocation was made by `new` with this
        // very layout (same length).
        unsafe { alloc::dealloc(self.0.as_ptr().cast::<u8>(), layout) }
    }
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr::new(s)
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &Self) -> bool {
        SharedStr::ptr_eq(self, other) || self.as_str() == other.as_str()
    }
}

impl Eq for SharedStr {}

impl PartialOrd for SharedStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for SharedStr {
    /// Hashes as the `str` does, so that maps keyed by `SharedStr` can be looked up by `&str`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<SharedStr>(), 8);
        assert_eq!(std::mem::size_of::<Option<SharedStr>>(), 8);
    }

    #[test]
    fn clones_share_and_the_last_drop_frees() {
        let a = SharedStr::new("instance");
        let b = a.clone();
        assert!(SharedStr::ptr_eq(&a, &b));
        assert_eq!(SharedStr::strong_count(&a), 2);
        drop(b);
        assert_eq!(SharedStr::strong_count(&a), 1);
        assert_eq!(&*a, "instance");
        let empty = SharedStr::new("");
        assert_eq!(empty.len(), 0);
    }

    #[test]
    fn clones_and_drops_across_threads_keep_the_count() {
        let a = SharedStr::new("shared");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        let c = a.clone();
                        assert_eq!(&*c, "shared");
                    }
                });
            }
        });
        assert_eq!(SharedStr::strong_count(&a), 1);
    }

    proptest! {
        #[test]
        fn behaves_as_the_str_it_holds(a in ".{0,40}", b in ".{0,40}") {
            let (sa, sb) = (SharedStr::new(&a), SharedStr::new(&b));
            prop_assert_eq!(sa.as_str(), a.as_str());
            prop_assert_eq!(sa == sb, a == b);
            prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
            let h = |x: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                x(&mut h);
                h.finish()
            };
            prop_assert_eq!(h(&|st| sa.hash(st)), h(&|st| a.as_str().hash(st)));
            prop_assert_eq!(sa.to_string(), a);
        }
    }
}
