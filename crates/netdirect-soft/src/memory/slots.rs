//! The token slots (PDs' privileged tokens, MRs, MWs) and protection domains.

use std::collections::VecDeque;

use netdirect_types::Status;

use super::lams::LamSlot;
use super::regions::MrEntry;
use super::tokens::{MAX_TOKEN_INDEX, join, rotate, split};
use super::windows::MwEntry;
use super::{MemoryTable, MrId, MwId, PdId};

/// What a token slot holds.
pub(super) enum Entry {
    Free,
    Privileged,
    Mr(MrEntry),
    Mw(MwEntry),
}

/// One token index: its current key, the serial of its current holder (what ids compare),
/// and the holder.
pub(super) struct Slot {
    pub(super) key: u8,
    pub(super) serial: u64,
    /// For privileged slots: the PD. For MR and MW slots the PD lives in the entry.
    pub(super) pd: Option<PdId>,
    pub(super) entry: Entry,
}

/// Everything behind the table's lock: token slots (slot 0 never used) with their free list,
/// and LAM slots with theirs.
pub(super) struct Tables {
    pub(super) slots: Vec<Slot>,
    pub(super) free: VecDeque<u32>,
    pub(super) next_serial: u64,
    pub(super) lams: Vec<LamSlot>,
    pub(super) lam_free: VecDeque<u32>,
}

impl Tables {
    /// The live slot named by `token` (key matches, not free).
    pub(super) fn by_token(&self, token: u32) -> Option<&Slot> {
        let (index, key) = split(token);
        let slot = self.slots.get(index as usize)?;
        (index != 0 && slot.key == key && !matches!(slot.entry, Entry::Free)).then_some(slot)
    }

    pub(super) fn alloc(
        &mut self,
        max: u32,
        pd: Option<PdId>,
        entry: Entry,
    ) -> Result<(u32, u64), Status> {
        let index = match self.free.pop_front() {
            Some(i) => i,
            None => {
                let i = self.slots.len() as u32;
                if i > max.min(MAX_TOKEN_INDEX) {
                    return Err(Status::INSUFFICIENT_RESOURCES);
                }
                self.slots.push(Slot {
                    key: 0,
                    serial: 0,
                    pd: None,
                    entry: Entry::Free,
                });
                i
            }
        };
        self.next_serial += 1;
        let serial = self.next_serial;
        let slot = &mut self.slots[index as usize];
        slot.serial = serial;
        slot.pd = pd;
        slot.entry = entry;
        Ok((index, serial))
    }

    pub(super) fn release(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.entry = Entry::Free;
        slot.pd = None;
        slot.key = rotate(slot.key);
        self.free.push_back(index);
    }

    /// The live slot `index` of generation `serial`: a stale or unknown handle is
    /// `STATUS_INVALID_HANDLE`.
    pub(super) fn slot(&self, index: u32, serial: u64) -> Result<&Slot, Status> {
        self.slots
            .get(index as usize)
            .filter(|s| s.serial == serial)
            .ok_or(Status::INVALID_HANDLE)
    }

    pub(super) fn slot_mut(&mut self, index: u32, serial: u64) -> Result<&mut Slot, Status> {
        self.slots
            .get_mut(index as usize)
            .filter(|s| s.serial == serial)
            .ok_or(Status::INVALID_HANDLE)
    }

    /// A live MR: a closed one (even while its windows hold its slot) is
    /// `STATUS_INVALID_HANDLE`.
    pub(super) fn mr(&self, mr: MrId) -> Result<&MrEntry, Status> {
        match &self.slot(mr.index, mr.serial)?.entry {
            Entry::Mr(e) if e.closing.is_none() => Ok(e),
            _ => Err(Status::INVALID_HANDLE),
        }
    }

    pub(super) fn mr_mut(&mut self, mr: MrId) -> Result<(&mut MrEntry, &mut u8), Status> {
        match self.slot_mut(mr.index, mr.serial)? {
            Slot {
                key,
                entry: Entry::Mr(e),
                ..
            } if e.closing.is_none() => Ok((e, key)),
            _ => Err(Status::INVALID_HANDLE),
        }
    }

    pub(super) fn mw(&self, mw: MwId) -> Result<(&MwEntry, u8), Status> {
        match self.slot(mw.index, mw.serial)? {
            Slot {
                key,
                entry: Entry::Mw(e),
                ..
            } => Ok((e, *key)),
            _ => Err(Status::INVALID_HANDLE),
        }
    }

    pub(super) fn mw_mut(&mut self, mw: MwId) -> Result<(&mut MwEntry, &mut u8), Status> {
        match self.slot_mut(mw.index, mw.serial)? {
            Slot {
                key,
                entry: Entry::Mw(e),
                ..
            } => Ok((e, key)),
            _ => Err(Status::INVALID_HANDLE),
        }
    }
}

impl MemoryTable {
    /// `NdkCreatePd`: a new PD with its privileged token.
    ///
    /// `STATUS_INSUFFICIENT_RESOURCES` when the token slots are used up.
    #[doc(alias = "NdkCreatePd")]
    pub fn create_pd(&self) -> Result<PdId, Status> {
        let mut t = self.tables.write();
        let (index, serial) = t.alloc(self.config.max_objects, None, Entry::Privileged)?;
        let slot = &mut t.slots[index as usize];
        let pd = PdId {
            serial,
            token: join(index, slot.key),
        };
        slot.pd = Some(pd);
        Ok(pd)
    }

    /// `NdkClosePd`: frees the PD and its privileged token.
    ///
    /// `STATUS_DEVICE_BUSY` while MRs or MWs of the PD exist (the object model keeps the PD
    /// until they are closed); `STATUS_INVALID_HANDLE` if already closed. Scans the table
    /// (closing a PD is rare).
    #[doc(alias = "NdkClosePd")]
    pub fn close_pd(&self, pd: PdId) -> Result<(), Status> {
        let mut t = self.tables.write();
        let (index, _) = split(pd.token);
        match t.slots.get(index as usize) {
            Some(s) if s.serial == pd.serial && matches!(s.entry, Entry::Privileged) => {}
            _ => return Err(Status::INVALID_HANDLE),
        }
        let busy = t.slots.iter().any(|s| match &s.entry {
            Entry::Mr(e) => e.pd == pd,
            Entry::Mw(e) => e.pd == pd,
            _ => false,
        });
        if busy {
            return Err(Status::DEVICE_BUSY);
        }
        t.release(index);
        Ok(())
    }

    pub(super) fn live_pd(&self, t: &Tables, pd: PdId) -> Result<(), Status> {
        match t.by_token(pd.token) {
            Some(s) if s.serial == pd.serial && matches!(s.entry, Entry::Privileged) => Ok(()),
            _ => Err(Status::INVALID_HANDLE),
        }
    }
}
