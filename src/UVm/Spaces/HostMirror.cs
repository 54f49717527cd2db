using System.Collections;
using System.Globalization;
using UVm.Frames;
using UVm.Host;
using UVm.PageTable;
using UVm.Interop;

namespace UVm.Spaces;

/// <summary>
/// Proves that the host mirrors a space's page table: each mapped page maps exactly its backing
/// (the frame pool's memfd at offset <c>Paddr</c> for a frame; for untracked memory the file of
/// the I/O memory region its <c>Paddr</c> falls in, at the region's file offset plus the offset
/// in the region), shared, with exactly the entry's R/W/X; every other page of the arena is the
/// reservation, private anonymous <c>PROT_NONE</c>.
/// </summary>
/// <remarks>
/// <para>Both sides are cut into runs (the table's slots and holes; the host's mappings, read from
/// <c>/proc/self/maps</c>, the kernel's own account, and the gaps between them) and compared
/// over every piece between the boundaries of either side: page by page in effect, so an extra
/// split on one side changes nothing, and one difference never shifts the rest. Files are
/// compared by device and inode. An I/O memory entry is resolved to the region containing its
/// <c>Paddr</c> and checked to really contain it; an entry in no region is reported
/// (<see cref="MirrorMappingKind.Unresolved"/>), never matched.</para>
/// <para>The whole page table is held (a cursor over the whole space) while the host is read:
/// every host change of the arena is made under a cursor of the space (a cursor's pending
/// updates are dispatched before its locks go, the fault path fills under a cursor), so the
/// arena's mappings cannot change during the read. <c>/proc/self/maps</c> is not read atomically
/// (the kernel returns a page of it per <c>read</c>, see <c>ProcMaps</c>), and a line of a mapping
/// that changes between two calls may be printed twice or missed; but a mapping that does not
/// change is printed exactly, so the arena's lines are exact. An entry changed without its host
/// update (widened rights left for a fault to fill) shows up as a difference, as it should.</para>
/// </remarks>
public static class HostMirror
{
    /// <summary>How many differences <see cref="Compare"/> lists unless told otherwise.</summary>
    public const int DefaultMaxDifferences = 16;

    /// <summary>Reads of <c>/proc/self/maps</c> that contradict themselves (overlapping lines) tolerated before giving up.</summary>
    private const int TornReadAttempts = 8;

    private readonly record struct Run(ulong Start, ulong End, MirrorMapping Mapping);

    /// <summary>
    /// The differences between <paramref name="space"/>'s page table and its host mappings, in
    /// address order: the first <paramref name="maxDifferences"/> listed, all counted
    /// (<see cref="MirrorReport.TotalCount"/>); empty when the host mirrors the table exactly.
    /// Waits for other threads' cursors of the space; must not be called while the calling
    /// thread holds one (it would wait for itself).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="space"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxDifferences"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    public static MirrorReport Compare(VmSpace space, int maxDifferences = DefaultMaxDifferences)
    {
        ArgumentNullException.ThrowIfNull(space);
        ArgumentOutOfRangeException.ThrowIfNegative(maxDifferences);
        space.ThrowIfDisposed();
        List<Run> expected, actual;
        var regions = new List<IoMem>();
        // Dispose takes the whole table too: holding it (taken on a live space), the space stays alive.
        PtCursor cursor = space.LockTable(0, space.Size, mutable: false);
        try
        {
            expected = Expected(space, cursor, regions);
            actual = Actual(space);
        }
        finally
        {
            cursor.Release();
        }
        HostFileId poolFile = HostFileId.FromStat(space.Pool.FileIdentity);
        return Diff(expected, actual, space.Size, maxDifferences,
            have => have.Kind == MirrorMappingKind.File ? have with { Paddr = PaddrOf(have.File!.Value, have.Offset, poolFile, space.Pool, regions) } : have);
    }

    /// <summary>Throws <see cref="InvalidOperationException"/> listing the differences unless the host mirrors the table.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="space"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    public static void Verify(VmSpace space)
    {
        MirrorReport report = Compare(space);
        if (report.TotalCount > 0) throw new InvalidOperationException("host mappings differ from the page table:\n" + report);
    }

    /// <summary>
    /// Compares two covers of <c>[0, size)</c>, piece by piece between the boundaries of either,
    /// merging adjacent differing pieces that differ the same way and continue each other.
    /// <paramref name="resolveHost"/> fills in the physical address a host piece stands for.
    /// </summary>
    private static MirrorReport Diff(List<Run> expected, List<Run> actual, ulong size, int max, Func<MirrorMapping, MirrorMapping> resolveHost)
    {
        var listed = new List<MirrorDifference>(Math.Min(max, 64));
        int total = 0;
        MirrorDifference? pending = null;

        void Flush()
        {
            if (pending is null) return;
            total++;
            if (listed.Count < max) listed.Add(pending);
            pending = null;
        }

        ulong pos = 0;
        int i = 0, j = 0;
        while (pos < size)
        {
            Run e = expected[i], a = actual[j];
            ulong end = Math.Min(e.End, a.End);
            MirrorMapping want = e.Mapping.Advance(pos - e.Start), have = resolveHost(a.Mapping.Advance(pos - a.Start));
            if (!want.IsMirroredBy(have))
            {
                MirrorDifferenceKind kind = Classify(want, have);
                if (pending is { } p && p.Kind == kind && p.Range.End == pos
                    && p.Expected.Advance(pos - p.Range.Start) == want && p.Actual.Advance(pos - p.Range.Start) == have)
                {
                    pending = p with { Range = new VaddrRange(p.Range.Start, end) };
                }
                else
                {
                    Flush();
                    pending = new MirrorDifference(kind, new VaddrRange(pos, end), want, have);
                }
            }
            pos = end;
            if (e.End == end) i++;
            if (a.End == end) j++;
        }
        Flush();
        return new MirrorReport(listed.ToArray(), total);
    }

    private static MirrorDifferenceKind Classify(in MirrorMapping want, in MirrorMapping have)
    {
        if (want.Kind == MirrorMappingKind.Reserved)
            return have.Kind == MirrorMappingKind.Absent ? MirrorDifferenceKind.Missing : MirrorDifferenceKind.Extra;
        if (have.Kind is MirrorMappingKind.Absent or MirrorMappingKind.Reserved) return MirrorDifferenceKind.Missing;
        if (want.Kind != MirrorMappingKind.File || have.Kind != MirrorMappingKind.File || want.File != have.File
            || want.Offset != have.Offset || want.Shared != have.Shared)
            return MirrorDifferenceKind.WrongBacking;
        return MirrorDifferenceKind.WrongRights;
    }

    /// <summary>The page table's side: its slots and holes, covering the space. Collects the I/O regions its entries name.</summary>
    private static List<Run> Expected(VmSpace space, PtCursor cursor, List<IoMem> regions)
    {
        var runs = new List<Run>();
        ulong hole = 0;
        while (cursor.Va < space.Size)
        {
            ulong? va = cursor.FindNext(space.Size - cursor.Va);
            if (va is null) break;
            PtSlot slot = cursor.Query();
            if (slot.Va > hole) runs.Add(new Run(hole, slot.Va, MirrorMapping.ReservedArena));
            AddSlot(space, slot, runs, regions);
            hole = slot.Va + slot.Size;
            cursor.MoveForward();
        }
        if (hole < space.Size) runs.Add(new Run(hole, space.Size, MirrorMapping.ReservedArena));
        return runs;
    }

    private static void AddSlot(VmSpace space, PtSlot slot, List<Run> runs, List<IoMem> regions)
    {
        PageFlags rights = RightsOf(Pte.HostProt(slot.Entry));
        ulong paddr = Pte.Paddr(slot.Entry), end = slot.Va + slot.Size;
        if (!Pte.IsUntracked(slot.Entry))
        {
            FramePool pool = space.Pool;
            bool inPool = pool.Owns(paddr) && slot.Size <= pool.Capacity - paddr;
            bool shared = !Pte.IsHostCopy(slot.Entry); // a host copy is a private mapping of its frame
            runs.Add(new Run(slot.Va, end, inPool
                ? new MirrorMapping(MirrorMappingKind.File, rights, shared, HostFileId.FromStat(pool.FileIdentity), paddr, paddr)
                : new MirrorMapping(MirrorMappingKind.Unresolved, rights, shared, null, 0, paddr)));
            return;
        }
        // Untracked: the region holding each part of the slot. The lookup's answer is checked,
        // and the file offset worked out here from the region's own fields.
        for (ulong va = slot.Va; va < end;)
        {
            ulong pa = paddr + (va - slot.Va);
            if (space.FindIoMemByPaddr(pa) is { } found && found.Io.Contains(pa))
            {
                IoMem io = found.Io;
                if (!regions.Contains(io)) regions.Add(io);
                ulong inRegion = pa - io.Paddr;
                ulong pieceEnd = end - va <= io.Size - inRegion ? end : va + (io.Size - inRegion);
                runs.Add(new Run(va, pieceEnd,
                    new MirrorMapping(MirrorMappingKind.File, rights, true, HostFileId.FromStat(io.Identity), io.FileOffset + inRegion, pa)));
                va = pieceEnd;
            }
            else
            {
                runs.Add(new Run(va, va + Paging.PageSize, new MirrorMapping(MirrorMappingKind.Unresolved, rights, true, null, 0, pa)));
                va += Paging.PageSize;
            }
        }
    }

    /// <summary>The host's side: its mappings of the arena and the gaps between them, covering the space.</summary>
    private static List<Run> Actual(VmSpace space)
    {
        for (int attempt = 1; ; attempt++)
        {
            List<Run>? runs = TryActual(space);
            if (runs != null) return runs;
            if (attempt == TornReadAttempts)
                throw new InvalidOperationException($"/proc/self/maps read torn {TornReadAttempts} times in a row (overlapping lines inside the arena)");
        }
    }

    /// <summary>Null when the read contradicts itself (a line overlapping the one before it): a torn read, not the host's state.</summary>
    private static List<Run>? TryActual(VmSpace space)
    {
        ulong baseAddr = (ulong)space.HostBase, limit = baseAddr + space.Size;
        var runs = new List<Run>();
        ulong pos = 0, lastEnd = 0;
        foreach (HostVma vma in ProcMaps.Read(baseAddr, limit))
        {
            if (vma.Start < lastEnd) return null;
            lastEnd = vma.End;
            ulong start = Math.Max(vma.Start, baseAddr) - baseAddr, end = Math.Min(vma.End, limit) - baseAddr;
            if (start > pos) runs.Add(new Run(pos, start, MirrorMapping.NoMapping));
            runs.Add(new Run(start, end, HostMapping(vma, vma.Start < baseAddr ? baseAddr - vma.Start : 0)));
            pos = end;
        }
        if (pos < space.Size) runs.Add(new Run(pos, space.Size, MirrorMapping.NoMapping));
        return runs;
    }

    /// <summary>A host mapping from <paramref name="skipped"/> bytes into it; its physical address is left to <see cref="PaddrOf"/>.</summary>
    private static MirrorMapping HostMapping(in HostVma vma, ulong skipped)
    {
        PageFlags rights = (vma.Perms[0] == 'r' ? PageFlags.R : 0) | (vma.Perms[1] == 'w' ? PageFlags.W : 0) | (vma.Perms[2] == 'x' ? PageFlags.X : 0);
        bool shared = vma.Perms[3] == 's';
        if (vma.Inode == 0)
        {
            return rights == PageFlags.None && !shared
                ? MirrorMapping.ReservedArena
                : new MirrorMapping(MirrorMappingKind.Anonymous, rights, shared, null, 0, null);
        }
        HostFileId file = HostFileId.FromMaps(vma.Dev, vma.Inode);
        ulong offset = vma.Offset + skipped;
        return new MirrorMapping(MirrorMappingKind.File, rights, shared, file, offset, null);
    }

    /// <summary>The physical address a host mapping's file and offset stand for, if the file is the pool's or a known region's.</summary>
    private static ulong? PaddrOf(HostFileId file, ulong offset, HostFileId poolFile, FramePool pool, List<IoMem> regions)
    {
        if (file == poolFile) return pool.Owns(offset) ? offset : null;
        foreach (IoMem io in regions)
        {
            if (HostFileId.FromStat(io.Identity) == file && offset >= io.FileOffset && offset - io.FileOffset < io.Size)
                return io.Paddr + (offset - io.FileOffset);
        }
        return null;
    }

    private static PageFlags RightsOf(int prot) =>
        ((prot & Libc.PROT_READ) != 0 ? PageFlags.R : 0) | ((prot & Libc.PROT_WRITE) != 0 ? PageFlags.W : 0)
        | ((prot & Libc.PROT_EXEC) != 0 ? PageFlags.X : 0);
}
