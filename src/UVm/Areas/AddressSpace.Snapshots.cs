using UVm.Spaces;

namespace UVm.Areas;

// Snapshots of an address space: take one, make spaces from it (VmSnapshot.Instantiate), and
// reset a space to one in place. The page-table half is VmSpace's (VmSpace.Snapshot.cs); this
// half keeps the areas in step.
public sealed partial class AddressSpace
{
    /// <summary>
    /// Freezes the address space into a snapshot: areas, mappings, rights and contents. Nothing
    /// is copied: every private page becomes copy-on-write here (as after <see cref="Fork"/>),
    /// its frame shared with the snapshot. The space goes on as before; a later
    /// <see cref="Reset"/> to the snapshot costs only what changed from now on.
    /// </summary>
    /// <remarks>
    /// Waits for faults being resolved and for cursors of other threads. Where the space uses host
    /// copies (<see cref="VmSpaceOptions.HostCopies"/>), its writable private pages become host copies
    /// of the snapshot's frames instead of losing W: the host copies each on its first write. Pages
    /// the host copied already get frames of their own first, so the snapshot holds every page's
    /// contents in frames; host copies not yet written stay so, their frames shared with it too.
    /// </remarks>
    /// <exception cref="ObjectDisposedException">The address space was disposed.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/>: write-protecting would pass the
    /// host-mapping budget (nothing changed, but host copies may have become frames of the space's own);
    /// <see cref="UVmError.NoMemory"/>: no frame for a host copy (nothing changed); <see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>:
    /// the host refused (the space keeps working, its private pages copy-on-write, the host mirroring them).</exception>
    /// <exception cref="InvalidOperationException">The calling thread holds a cursor of the space (nothing changed).</exception>
    public VmSnapshot Snapshot()
    {
        ThrowIfDisposed();
        _lock.EnterWriteLock();
        try
        {
            // Private pages may become host copies; shared memory (linear frames) stays shared.
            VmArea? last = null;
            TableSnapshot table = Space.CaptureTable(va =>
            {
                if (last == null || !last.Range.Contains(va)) last = _areas.TryFind(va, out VmArea? area) ? area : null;
                return last is { Backend.HasPrivatePages: true };
            });
            return new VmSnapshot(table, _areas.ToArray(), _faultAround, Space.SameShape());
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>
    /// Makes the address space equal to <paramref name="snapshot"/> again, in place: contents,
    /// areas and rights, keeping its arena, its identity, its page-fault handler, its activation
    /// on every thread and its fault-around setting. Private pages go back to the snapshot's
    /// frames, copy-on-write. The cost follows what changed since the snapshot was taken from
    /// this space, since the space was made from it, or since its last reset to it: pages
    /// written, filled, unmapped or re-protected, and areas added or removed; to any other
    /// snapshot, it follows what either maps.
    /// </summary>
    /// <remarks>
    /// Faults and cursors of other threads are waited for; their accesses fault again afterwards
    /// and are resolved against the restored state (never a torn one). The write watch is left as
    /// it is: pages written before the reset stay listed until <see cref="ResetWriteWatch"/>, and
    /// the pages the reset puts back are write-protected, so their next write is seen.
    /// </remarks>
    /// <returns>The pages the reset compared with the snapshot (those that may have changed), the pages the host
    /// copied since (host copies, see <see cref="VmSpaceOptions.HostCopies"/>: found with <c>PAGEMAP_SCAN</c> and dropped) included.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="snapshot"/> is null.</exception>
    /// <exception cref="ArgumentException">The snapshot is of a space of another size or pool.</exception>
    /// <exception cref="ObjectDisposedException">The address space or the snapshot was disposed.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/>, <see cref="UVmError.HostNoMemory"/> or
    /// <see cref="UVmError.HostRefused"/>: refused; the address space is exactly as it was.</exception>
    /// <exception cref="InvalidOperationException">The calling thread holds a cursor of the space (nothing changed); or
    /// the host refused twice to drop the copies it made, after the rest of the reset was done (those pages keep
    /// what the guest wrote; a later reset drops them).</exception>
    public int Reset(VmSnapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        ThrowIfDisposed();
        if (!ReferenceEquals(snapshot.Pool, Space.Pool)) ThrowHelper.Argument("the snapshot's frames belong to another pool", nameof(snapshot));
        if (snapshot.Size != Space.Size) ThrowHelper.Argument($"the snapshot is of a space of 0x{snapshot.Size:x} bytes, this one has 0x{Space.Size:x}", nameof(snapshot));
        _lock.EnterWriteLock();
        try
        {
            snapshot.Table.EnterUse();
            try
            {
                (int compared, InvalidOperationException? dropRefused) = Space.ResetTo(snapshot.Table);
                if (!_areas.SameAs(snapshot.Areas))
                {
                    _areas.ReplaceAll(snapshot.Areas);
                    _kinds.Refresh(_areas);
                    _chunks.ReleaseUnused(new VaddrRange(0, Space.Size), _areas.Overlaps);
                }
                if (dropRefused != null) throw dropRefused; // the areas are the snapshot's, as the table is
                return compared;
            }
            finally
            {
                snapshot.Table.ExitUse();
            }
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>An address space over <paramref name="space"/>, just made from a snapshot with <paramref name="areas"/>.</summary>
    internal static AddressSpace Adopt(VmSpace space, IReadOnlyList<VmArea> areas, int faultAroundPages)
    {
        var areaSet = new AreaSet(space.Size);
        areaSet.ReplaceAll(areas);
        return new AddressSpace(space, areaSet) { _faultAround = faultAroundPages };
    }
}
