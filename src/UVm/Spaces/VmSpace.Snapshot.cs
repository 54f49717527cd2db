using UVm.Host;
using UVm.Interop;
using UVm.PageTable;

namespace UVm.Spaces;

// Snapshots at the level of the page table: capture a space's table, make a space from one,
// reset a space to one in place. A space that was captured, made or reset keeps a change log
// (PtChangeLog) measured from that snapshot, so the next reset to it visits only the pages
// whose entries changed since: its cost follows the dirt, not the size of the space.
public sealed partial class VmSpace
{
    /// <summary>
    /// Freezes this space's table into a new snapshot: every tracked frame gets a reference of
    /// the snapshot's and loses write access here (copy-on-write, as after a fork; nothing is
    /// copied), or, when the space uses host copies, a writable one of a private page
    /// (<paramref name="isPrivate"/>: not shared memory such as linear frames, whose writes must
    /// reach their frames) becomes a host copy here and in the snapshot. I/O memory is kept open.
    /// From now on the space logs its changes against it. Host copies the host made are dissolved
    /// first (their contents go to frames); those it did not make stay host copies, their frames
    /// shared with the new snapshot too.
    /// </summary>
    /// <remarks>Waits for live cursors of other threads; the calling thread must hold none of this space.</remarks>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/>: no frame for a host copy (nothing changed);
    /// <see cref="UVmError.HostMappingLimit"/>: write-protecting would pass the budget (the space is left as it
    /// was, but for host copies that became frames of its own); <see cref="UVmError.HostNoMemory"/> or
    /// <see cref="UVmError.HostRefused"/>: the host refused the write-protection (the space keeps write-protected entries).</exception>
    internal TableSnapshot CaptureTable(Func<ulong, bool> isPrivate)
    {
        ThrowIfDisposed();
        DissolveHostCopies(stop: false, keepUnwritten: true); // the copies' contents go to frames, the others share theirs
        var snapshot = new TableSnapshot(Pool, Size);
        CopyTableOnWrite(snapshot.Table, child: null, snapshot.Keep, copied: () => (_pt.Changes ??= new PtChangeLog()).Clear(snapshot), halfMade: snapshot,
            hostCopyAt: UsesHostCopies ? isPrivate : null);
        return snapshot;
    }

    /// <summary>
    /// A new space equal to <paramref name="snapshot"/>: its table is a copy of the frozen one
    /// (every tracked frame shared copy-on-write, with a reference of the new space's), mirrored
    /// onto the new arena one host call per run. The caller holds a use of the snapshot.
    /// </summary>
    /// <exception cref="ArgumentException">Invalid <paramref name="options"/> (see <see cref="VmSpace(VmSpaceOptions)"/>).</exception>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/>, <see cref="UVmError.HostNoMemory"/>
    /// or <see cref="UVmError.HostRefused"/>: the new space's host mappings were refused (nothing is left of it).</exception>
    internal static VmSpace FromSnapshot(TableSnapshot snapshot, VmSpaceOptions options)
    {
        var space = new VmSpace(options);
        try
        {
            PtCursor cursor = space.LockTable(0, space.Size, mutable: true);
            try
            {
                foreach (IoMem io in snapshot.IoMems) space.KeepIoMem(io);
                var visitor = new SnapshotMirror(space);
                if (space.UsesHostCopies) space.HoldsHostCopies();
                PtFork.CopyFrozen(snapshot.Table, space._pt, visitor, space.UsesHostCopies);
                visitor.Dispatch();
                space._pt.Changes = new PtChangeLog { Baseline = snapshot };
            }
            finally
            {
                cursor.Release();
            }
        }
        catch
        {
            space.Dispose(); // its table holds exactly the references it took
            throw;
        }
        return space;
    }

    /// <summary>
    /// Makes this space's table and host equal to <paramref name="snapshot"/> again, in place:
    /// when the space's change log is measured from this snapshot, only the pages logged as
    /// changed are compared and restored; otherwise every page either maps. One batch: if the
    /// host or the budget refuses, the space is left exactly as it was. The caller holds a use
    /// of the snapshot and checked that it has this space's size and pool.
    /// </summary>
    /// <remarks>Waits for live cursors of other threads (so for faults being resolved); the calling thread must hold none of this space.</remarks>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/>, <see cref="UVmError.HostNoMemory"/>
    /// or <see cref="UVmError.HostRefused"/>: refused; nothing changed.</exception>
    /// <returns>The pages compared, and the failure to drop the host copies if the host refused that
    /// twice (the rest of the reset is done then; the caller finishes its part and throws it).</returns>
    internal (int Compared, InvalidOperationException? DropRefused) ResetTo(TableSnapshot snapshot)
    {
        ThrowIfDisposed();
        var c = new CursorMut(this, LockTable(0, Size, mutable: true), NewFlusher());
        try
        {
            PtChangeLog log = _pt.Changes ??= new PtChangeLog();
            List<ulong> pages = ReferenceEquals(log.Baseline, snapshot) ? log.Pages() : c.PagesEitherMaps(snapshot);
            // The pages the host copied since: written by the guest with no fault of UVm's, so in no log.
            var written = new List<(ulong Start, ulong End)>();
            try
            {
                if (MayHoldHostCopies) FindHostCopies(0, Size, written);
                if (UsesHostCopies) HoldsHostCopies();
                var changed = new List<VaddrRange>();
                ulong agreed = 0;
                foreach (ulong va in pages)
                {
                    if (va < agreed) continue;
                    (VaddrRange restored, bool changes) = c.RestoreFrom(snapshot, va);
                    agreed = restored.End;
                    if (!changes) continue;
                    if (changed.Count > 0 && changed[^1].End >= restored.Start) changed[^1] = changed[^1] with { End = Math.Max(changed[^1].End, restored.End) };
                    else changed.Add(restored);
                }
                c.MirrorRestored(snapshot, changed);
            }
            catch
            {
                c.Abandon();
                throw;
            }
            c.Flusher.DispatchTlbFlush(); // refused: the whole batch is undone, host copies under it written back
            log.Clear(snapshot);
            // Last, as it cannot be taken back: the copies go, and their pages read the snapshot's frames again.
            InvalidOperationException? refused = null;
            try
            {
                DropHostCopies(written);
            }
            catch (InvalidOperationException e)
            {
                refused = e;
            }
            return (pages.Count + HostCopiesBeyond(written, pages), refused);
        }
        finally
        {
            c.Dispose();
        }
    }

    /// <summary>
    /// Drops the host copies of <paramref name="written"/>; if the host refuses the batched call,
    /// range by range. Some of them may lie where the reset mapped the snapshot again (which
    /// dropped them already): dropping nothing is harmless.
    /// </summary>
    /// <exception cref="InvalidOperationException">The host refused that too: some pages keep the guest's writes.</exception>
    private void DropHostCopies(List<(ulong Start, ulong End)> written)
    {
        if (written.Count == 0) return;
        try
        {
            HostCopies.Drop(_arena.Base, written);
            return;
        }
        catch (UVmException)
        {
            // One range at a time, with the plain call.
        }
        foreach ((ulong s, ulong e) in written)
        {
            if (Libc.Madvise(_arena.Base + (nint)s, (nuint)(e - s), Libc.MADV_DONTNEED) != 0)
                throw new InvalidOperationException($"the host refused to drop the copies of [0x{s:x}, 0x{e:x}) twice; those pages keep what the guest wrote");
        }
    }

    /// <summary>The pages of <paramref name="written"/> that are not in <paramref name="pages"/> (sorted, duplicates allowed).</summary>
    private static int HostCopiesBeyond(List<(ulong Start, ulong End)> written, List<ulong> pages)
    {
        int count = 0, i = 0;
        foreach ((ulong s, ulong e) in written)
        {
            for (ulong va = s; va < e; va += Paging.PageSize)
            {
                while (i < pages.Count && pages[i] < va) i++;
                if (i == pages.Count || pages[i] != va) count++;
            }
        }
        return count;
    }

    /// <summary>Queues a new space's mappings of a snapshot's leaves, taking a reference on each tracked frame.</summary>
    private sealed class SnapshotMirror(VmSpace space) : INodeForkVisitor
    {
        private readonly TlbFlusher _flusher = space.NewFlusher();

        public void Leaves(ulong vaBase, ReadOnlySpan<ulong> before, ReadOnlySpan<ulong> after)
        {
            space.IssueMirrorRuns(_flusher, vaBase, after);
            space.AddRefs(after); // last, when nothing can refuse
        }

        public void Leaf(ulong va, ulong size, ulong before, ulong after)
        {
            _flusher.EnsureRoomForOneMore();
            // The new space keeps the snapshot's I/O regions before the copy, so it finds them all.
            TlbFlushOp map = space.MirrorOf(va, size, after) ?? throw new InvalidOperationException($"no I/O memory of the snapshot holds 0x{Pte.Paddr(after):x}");
            if (!Pte.IsUntracked(after)) space.Pool.AddRef(Pte.Paddr(after));
            _flusher.IssueTlbFlush(map);
        }

        internal void Dispatch() => _flusher.DispatchTlbFlush();
    }
}
