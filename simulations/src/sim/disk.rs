//! A simulated disk under each node's redb store: what was synced, what was only written, and
//! the faults a real disk has.
//!
//! redb writes pages with [`StorageBackend::write`] and makes a commit durable with
//! [`StorageBackend::sync_data`]. The disk keeps the bytes the node reads (`data`) and, when
//! power losses are possible, the bytes that survive one (`durable`): a sync copies what was
//! written since the last one. Faults:
//!
//! - **power loss** ([`Disk::arm_power_loss`]): the machine dies after a number of further
//!   writes and syncs; every operation fails from then on. What survives
//!   ([`Disk::after_power_loss`]) is the synced data plus any subset of the unsynced writes
//!   (a disk reorders them), the last one torn at a 512-byte sector;
//! - **full** ([`Disk::set_full`]): the blocks the store file has are all it gets, as on a
//!   full ext4 or tmpfs: overwriting written blocks works, growing the file works (it is
//!   sparse), but the first write into a block never written fails with ENOSPC;
//! - **I/O errors** ([`Disk::set_failing`]): every read, write and sync fails with EIO.
//!
//! Same seed, same faults: the only randomness is the RNG the simulator passes in.
//!
//! The bytes are kept in 4 KiB pages, and a page never written is not kept: a fresh redb
//! file is 1 MiB of which 4 pages hold anything, and a 10 000-node run holds 10 000 of them.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use redb::StorageBackend;

/// Sector size: a torn write keeps a whole number of these.
const SECTOR: usize = 512;
/// Filesystem block: the first write into one allocates it. Also the page of [`Pages`].
const BLOCK: usize = 4096;

/// Bytes in 4 KiB pages; a page never written reads as zeroes and takes no memory, and a
/// copy shares its pages until one side writes them.
#[derive(Clone, Debug, Default)]
struct Pages {
    len: usize,
    pages: Vec<Option<Arc<[u8; BLOCK]>>>,
}

impl Pages {
    fn resize(&mut self, len: usize) {
        self.pages.resize(len.div_ceil(BLOCK), None);
        if len < self.len && !len.is_multiple_of(BLOCK) {
            // Bytes past the new end read as zero if the file grows again.
            if let Some(Some(page)) = self.pages.last_mut() {
                Arc::make_mut(page)[len % BLOCK..].fill(0);
            }
        }
        self.len = len;
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = offset + done;
            let (page, within) = (at / BLOCK, at % BLOCK);
            let n = (BLOCK - within).min(out.len() - done);
            match self.pages.get(page).and_then(Option::as_ref) {
                Some(p) => out[done..done + n].copy_from_slice(&p[within..within + n]),
                None => out[done..done + n].fill(0),
            }
            done += n;
        }
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        let mut done = 0;
        while done < bytes.len() {
            let at = offset + done;
            let (page, within) = (at / BLOCK, at % BLOCK);
            let n = (BLOCK - within).min(bytes.len() - done);
            let chunk = &bytes[done..done + n];
            let slot = &mut self.pages[page];
            match slot {
                Some(p) => Arc::make_mut(p)[within..within + n].copy_from_slice(chunk),
                None if chunk.iter().all(|&b| b == 0) => {}
                None => {
                    let mut p = [0u8; BLOCK];
                    p[within..within + n].copy_from_slice(chunk);
                    *slot = Some(Arc::new(p));
                }
            }
            done += n;
        }
    }

    /// Copies `len` bytes at `offset` from `from`.
    fn copy_from(&mut self, from: &Pages, offset: usize, len: usize) {
        let mut buf = vec![0u8; len];
        from.read(offset, &mut buf);
        self.write(offset, &buf);
    }

    /// Every byte, for a test.
    #[cfg(test)]
    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        self.read(0, &mut out);
        out
    }
}

/// The simulator's handle on one node's disk; [`Disk::backend`] is what redb gets.
#[derive(Clone, Debug, Default)]
pub struct Disk(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    /// What reads return: everything written.
    data: Pages,
    /// What a power loss keeps (only when tracked).
    durable: Option<Pages>,
    /// Writes since the last sync: (offset, length), in order.
    pending: Vec<(usize, usize)>,
    /// Operations (writes, growths, syncs) left before the power goes; `Some(0)`: gone.
    power: Option<u32>,
    /// Blocks written at least once (allocated), one bit each.
    blocks: Vec<u64>,
    /// No free blocks.
    full: bool,
    failing: bool,
    /// A broken disk for the oracle's own test: syncs return without making anything durable.
    #[cfg(test)]
    lies: bool,
    /// Operations refused, by the fault that refused them.
    refused_full: u64,
    refused_io: u64,
}

/// The [`StorageBackend`] over a [`Disk`].
#[derive(Debug)]
pub struct Backend(Disk);

impl Disk {
    /// An empty disk; `durable`: track what survives a power loss (costs a second copy).
    pub fn new(durable: bool) -> Disk {
        Disk(Arc::new(Mutex::new(State {
            durable: durable.then(Pages::default),
            ..State::default()
        })))
    }

    /// A copy of this disk (what it holds now, its durable part too; not its faults) that
    /// shares its pages until one of them writes: many nodes started from one image hold it
    /// once.
    pub fn fork(&self) -> Disk {
        let s = self.state();
        Disk(Arc::new(Mutex::new(State {
            data: s.data.clone(),
            durable: s.durable.clone(),
            blocks: s.blocks.clone(),
            ..State::default()
        })))
    }

    /// A disk holding `image` (all of it durable and allocated).
    fn from_image(image: Pages, durable: bool) -> Disk {
        let blocks = image.pages.len();
        let mut bits = vec![0u64; blocks.div_ceil(64)];
        for b in 0..blocks {
            bits[b / 64] |= 1 << (b % 64);
        }
        Disk(Arc::new(Mutex::new(State {
            durable: durable.then(|| image.clone()),
            data: image,
            blocks: bits,
            ..State::default()
        })))
    }

    /// The backend to give redb.
    pub fn backend(&self) -> Backend {
        Backend(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The simulator is single-threaded; a poisoned lock can only follow a panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power goes after `ops` more writes, growths or syncs.
    pub fn arm_power_loss(&self, ops: u32) {
        self.state().power = Some(ops);
    }

    /// Whether the power went.
    pub fn powered_off(&self) -> bool {
        self.state().power == Some(0)
    }

    /// Whether a power loss is armed and has not happened.
    pub fn armed(&self) -> bool {
        self.state().power.is_some_and(|n| n > 0)
    }

    /// Cuts the power now.
    pub fn cut_power(&self) {
        self.state().power = Some(0);
    }

    /// A new disk holding what survived the power loss: the synced bytes plus, drawn from
    /// `rng`, any subset of the unsynced writes, the last one torn at a sector boundary.
    /// Unsynced growth is kept (zeroes). Returns the disk and how many unsynced writes were
    /// dropped or torn.
    pub fn after_power_loss(&self, rng: &mut impl Rng) -> (Disk, u64) {
        let s = self.state();
        let Some(durable) = &s.durable else {
            return (Disk::from_image(s.data.clone(), false), 0);
        };
        let mut image = durable.clone();
        image.resize(s.data.len.max(image.len));
        let mut damaged = 0;
        let last = s.pending.len().saturating_sub(1);
        for (k, &(offset, len)) in s.pending.iter().enumerate() {
            let end = (offset + len).min(s.data.len);
            if offset >= end {
                continue;
            }
            let keep = if k == last {
                // Torn: a whole number of sectors, possibly none, possibly all.
                let sectors = (end - offset).div_ceil(SECTOR);
                (rng.gen_range(0..=sectors) * SECTOR).min(end - offset)
            } else if rng.gen_bool(0.5) {
                end - offset
            } else {
                0
            };
            if keep < end - offset {
                damaged += 1;
            }
            image.copy_from(&s.data, offset, keep);
        }
        (Disk::from_image(image, true), damaged)
    }

    /// Fills the disk (or frees space): a first write into a block fails with ENOSPC.
    pub fn set_full(&self, full: bool) {
        self.state().full = full;
    }

    /// Makes every operation fail with EIO (or stop failing).
    pub fn set_failing(&self, failing: bool) {
        self.state().failing = failing;
    }

    /// Breaks the disk: syncs succeed but keep nothing (for the oracle's own test).
    #[cfg(test)]
    pub fn lie_about_syncs(&self) {
        self.state().lies = true;
    }

    /// Whether it keeps what survives a power loss.
    pub fn tracks_durable(&self) -> bool {
        self.state().durable.is_some()
    }

    /// Whether every operation fails with EIO.
    pub fn failing(&self) -> bool {
        self.state().failing
    }

    /// Writes refused for a full disk, and operations failed with EIO.
    pub fn refused(&self) -> (u64, u64) {
        let s = self.state();
        (s.refused_full, s.refused_io)
    }

    /// Bytes on the disk.
    pub fn len(&self) -> usize {
        self.state().data.len
    }

    /// Pages held in memory (those ever written with something but zeroes).
    pub fn resident_pages(&self) -> usize {
        self.state()
            .data
            .pages
            .iter()
            .filter(|p| p.is_some())
            .count()
    }

    /// Whether the disk holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    /// Checks a write of `range` (empty for a growth or a sync) against the faults, and
    /// allocates its blocks.
    fn mutate(&mut self, range: std::ops::Range<usize>) -> io::Result<()> {
        match &mut self.power {
            Some(0) => return Err(io::Error::other("the power is off")),
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    return Err(io::Error::other("the power went"));
                }
            }
            None => {}
        }
        if self.failing {
            self.refused_io += 1;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if range.is_empty() {
            return Ok(());
        }
        let blocks = range.start / BLOCK..range.end.div_ceil(BLOCK);
        let allocated = |s: &State, b: usize| {
            s.blocks
                .get(b / 64)
                .is_some_and(|w| w & (1 << (b % 64)) != 0)
        };
        if self.full && blocks.clone().any(|b| !allocated(self, b)) {
            self.refused_full += 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if self.blocks.len() * 64 < blocks.end {
            self.blocks.resize(blocks.end.div_ceil(64), 0);
        }
        for b in blocks {
            self.blocks[b / 64] |= 1 << (b % 64);
        }
        Ok(())
    }
}

impl StorageBackend for Backend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.0.state().data.len as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let mut s = self.0.state();
        if s.failing {
            s.refused_io += 1;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if s.power == Some(0) {
            return Err(io::Error::other("the power is off"));
        }
        let start = offset as usize;
        let end = start
            .checked_add(out.len())
            .filter(|&e| e <= s.data.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        s.data.read(start, &mut out[..end - start]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut s = self.0.state();
        let len = len as usize;
        if len > s.data.len {
            // Sparse: growing takes no blocks.
            s.mutate(0..0)?;
        }
        s.data.resize(len);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut s = self.0.state();
        s.mutate(0..0)?;
        let pending = std::mem::take(&mut s.pending);
        #[cfg(test)]
        if s.lies {
            // Kept in a volatile cache that a power loss empties.
            return Ok(());
        }
        let State { data, durable, .. } = &mut *s;
        if let Some(durable) = durable {
            durable.resize(data.len);
            for (offset, len) in pending {
                let end = (offset + len).min(data.len);
                if offset < end {
                    durable.copy_from(data, offset, end - offset);
                }
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), io::Error> {
        let mut s = self.0.state();
        let start = offset as usize;
        let end = start + bytes.len();
        s.mutate(start..end)?;
        if end > s.data.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "write past the end",
            ));
        }
        s.data.write(start, bytes);
        if s.durable.is_some() {
            s.pending.push((start, bytes.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn only_synced_writes_are_sure_to_survive_a_power_loss() {
        let disk = Disk::new(true);
        let b = disk.backend();
        b.set_len(4096).unwrap();
        b.write(0, &[1; 1024]).unwrap();
        b.sync_data().unwrap();
        b.write(1024, &[2; 2048]).unwrap();
        let mut survived = [false, false];
        for seed in 0..64 {
            let (after, _) = disk.after_power_loss(&mut ChaCha8Rng::seed_from_u64(seed));
            let mut out = [0u8; 3072];
            after.backend().read(0, &mut out).unwrap();
            assert_eq!(out[..1024], [1; 1024]);
            // The unsynced write is kept whole, torn at a sector, or lost.
            let kept = out[1024..].iter().take_while(|&&x| x == 2).count();
            assert_eq!(kept % SECTOR, 0);
            assert!(out[1024 + kept..].iter().all(|&x| x == 0));
            survived[usize::from(kept == 2048)] = true;
        }
        assert_eq!(survived, [true, true], "both outcomes happen");
    }

    #[test]
    fn pages_never_written_take_no_memory_and_read_as_zeroes() {
        let disk = Disk::new(false);
        let store = crate::sim::storage::open(&disk, 0).unwrap();
        drop(store);
        // redb makes a 1 MiB file; a handful of its pages hold anything.
        assert!(disk.len() >= 1 << 20, "{}", disk.len());
        assert!(disk.resident_pages() < 16, "{}", disk.resident_pages());
        let mut p = Pages::default();
        p.resize(10_000);
        p.write(4_000, &[1; 200]);
        p.write(9_000, &[0; 500]);
        assert_eq!(p.pages.iter().filter(|x| x.is_some()).count(), 2);
        let b = p.bytes();
        assert!(b[..4_000].iter().all(|&x| x == 0) && b[4_000..4_200].iter().all(|&x| x == 1));
        p.resize(4_100);
        p.resize(10_000);
        assert!(p.bytes()[4_100..].iter().all(|&x| x == 0));
    }

    #[test]
    fn a_fork_shares_pages_until_written() {
        let disk = Disk::new(true);
        let b = disk.backend();
        b.set_len(8192).unwrap();
        b.write(0, &[1; 8192]).unwrap();
        b.sync_data().unwrap();
        let fork = disk.fork();
        fork.backend().write(0, &[2; 10]).unwrap();
        let (mut x, mut y) = ([0u8; 12], [0u8; 12]);
        b.read(0, &mut x).unwrap();
        fork.backend().read(0, &mut y).unwrap();
        assert_eq!(x, [1; 12]);
        assert_eq!(y[..10], [2; 10]);
        assert_eq!(y[10..], [1; 2]);
        let shared = |a: &Disk, b: &Disk, page: usize| {
            let (a, b) = (a.state(), b.state());
            Arc::ptr_eq(
                a.data.pages[page].as_ref().unwrap(),
                b.data.pages[page].as_ref().unwrap(),
            )
        };
        assert!(!shared(&disk, &fork, 0));
        assert!(shared(&disk, &fork, 1));
    }

    #[test]
    fn an_armed_disk_fails_every_operation_once_the_power_goes() {
        let disk = Disk::new(true);
        let b = disk.backend();
        b.set_len(1024).unwrap();
        disk.arm_power_loss(2);
        b.write(0, &[1; 8]).unwrap();
        assert!(b.write(8, &[1; 8]).is_err());
        assert!(disk.powered_off());
        assert!(b.sync_data().is_err());
        assert!(b.read(0, &mut [0; 8]).is_err());
    }

    #[test]
    fn a_full_disk_refuses_writes_beyond_its_blocks_and_a_failing_one_everything() {
        let disk = Disk::new(false);
        let b = disk.backend();
        b.set_len(8192).unwrap();
        b.write(0, &[1; 1024]).unwrap();
        disk.set_full(true);
        b.write(1024, &[1; 1024]).unwrap();
        let e = b.write(4090, &[1; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        b.read(0, &mut [0; 8]).unwrap();
        disk.set_full(false);
        disk.set_failing(true);
        assert_eq!(
            b.read(0, &mut [0; 8]).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        assert_eq!(disk.refused(), (1, 1));
    }
}
