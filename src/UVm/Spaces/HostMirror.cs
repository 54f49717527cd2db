using System.Collections;
using System.Globalization;
using UVm.Frames;
using UVm.Host;
using UVm.PageTable;
using UVm.Interop;

namespace UVm.Spaces;

/// <summary>How the host's mappings of a guest range differ from the page table (see <see cref="MirrorDifference"/>).</summary>
public enum MirrorDifferenceKind
{
    /// <summary>
    /// The page table maps the range; the host has only the arena's <c>PROT_NONE</c>
    /// reservation there, or no mapping at all. Also a hole of the table where the host lost the
    /// reservation itself (<see cref="MirrorMappingKind.Absent"/>).
    /// </summary>
    Missing,

    /// <summary>The host maps something (a file, or anonymous memory with rights) where the page table has a hole.</summary>
    Extra,

    /// <summary>
    /// Both map the range but not the same bytes: the host maps another file (device or inode),
    /// another offset of the right file (another frame, another page of an I/O region),
    /// anonymous memory, or the right file privately; or the table's entry names no backing at
    /// all (<see cref="MirrorMappingKind.Unresolved"/>).
    /// </summary>
    WrongBacking,

    /// <summary>Both map the same file at the same offset, shared, with different rights.</summary>
    WrongRights,
}

/// <summary>What one side of the comparison, the page table or the host, has over a guest range.</summary>
public enum MirrorMappingKind
{
    /// <summary>No mapping at all: the arena's reservation is gone there. Host side only.</summary>
    Absent,

    /// <summary>On the host, the arena's reservation: private anonymous memory without rights (<c>---p</c>). In the page table, a hole.</summary>
    Reserved,

    /// <summary>Anonymous memory (no file) with rights, or shared. Host side only.</summary>
    Anonymous,

    /// <summary>A mapping of <see cref="MirrorMapping.File"/> from <see cref="MirrorMapping.Offset"/>.</summary>
    File,

    /// <summary>
    /// A page-table entry whose physical address names no backing: a frame past the end of the
    /// space's frame pool, or untracked memory in no I/O memory region the space registered.
    /// Page-table side only; no host mapping matches it.
    /// </summary>
    Unresolved,
}

/// <summary>A file as the host tells files apart: its device and inode, as <c>/proc/self/maps</c> prints them.</summary>
/// <param name="Major">Major number of the file system's device.</param>
/// <param name="Minor">Minor number of the file system's device.</param>
/// <param name="Inode">Inode number on that device.</param>
public readonly record struct HostFileId(uint Major, uint Minor, ulong Inode)
{
    /// <summary>The identity of a <c>struct stat</c>'s <c>st_dev</c> and <c>st_ino</c> (glibc's encoding of the device number).</summary>
    internal static HostFileId FromStat((ulong Dev, ulong Ino) id)
    {
        ulong dev = id.Dev;
        uint major = (uint)(((dev & 0x0000_0000_000f_ff00UL) >> 8) | ((dev & 0xffff_f000_0000_0000UL) >> 32));
        uint minor = (uint)((dev & 0xffUL) | ((dev & 0x0000_0fff_fff0_0000UL) >> 12));
        return new HostFileId(major, minor, id.Ino);
    }

    /// <summary>The identity of a <c>/proc/self/maps</c> line: its <c>major:minor</c> column (hex) and its inode.</summary>
    internal static HostFileId FromMaps(string dev, ulong inode)
    {
        int colon = dev.IndexOf(':');
        uint major = uint.Parse(dev.AsSpan(0, colon), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        uint minor = uint.Parse(dev.AsSpan(colon + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        return new HostFileId(major, minor, inode);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Major:x2}:{Minor:x2} inode {Inode}";
}

/// <summary>
/// What one side of the comparison has at the first page of a guest range; over the rest of the
/// range it continues page by page (<see cref="Offset"/> and <see cref="Paddr"/> advancing).
/// </summary>
/// <param name="Kind">What is there.</param>
/// <param name="Rights">The rights: only <see cref="PageFlags.R"/>, <see cref="PageFlags.W"/> and <see cref="PageFlags.X"/>.
/// On the page table's side those the host must give (the entry's R/W/X).</param>
/// <param name="Shared">Whether the mapping is shared (<c>MAP_SHARED</c>, the <c>s</c> of <c>/proc/self/maps</c>); every mapping the table asks for is.</param>
/// <param name="File">The mapped file for <see cref="MirrorMappingKind.File"/>; null otherwise.</param>
/// <param name="Offset">Offset in <see cref="File"/> of the range's first byte; 0 unless <see cref="File"/> is set.</param>
/// <param name="Paddr">The physical address of the range's first byte. On the page table's side the entry's.
/// On the host's side the frame or I/O memory address its file and offset stand for, when the file is the
/// frame pool's or that of a region an entry of the table names; null otherwise.</param>
public readonly record struct MirrorMapping(MirrorMappingKind Kind, PageFlags Rights, bool Shared, HostFileId? File, ulong Offset, ulong? Paddr)
{
    /// <summary>The four permission characters as <c>/proc/self/maps</c> prints them, e.g. <c>rw-s</c>.</summary>
    public string Perms =>
        string.Create(4, (Rights, Shared), static (span, s) =>
        {
            span[0] = (s.Rights & PageFlags.R) != 0 ? 'r' : '-';
            span[1] = (s.Rights & PageFlags.W) != 0 ? 'w' : '-';
            span[2] = (s.Rights & PageFlags.X) != 0 ? 'x' : '-';
            span[3] = s.Shared ? 's' : 'p';
        });

    /// <summary>The arena's reservation (a hole of the table).</summary>
    internal static readonly MirrorMapping ReservedArena = new(MirrorMappingKind.Reserved, PageFlags.None, false, null, 0, null);

    /// <summary>No host mapping at all.</summary>
    internal static readonly MirrorMapping NoMapping = new(MirrorMappingKind.Absent, PageFlags.None, false, null, 0, null);

    /// <summary>The same mapping <paramref name="bytes"/> further on.</summary>
    internal MirrorMapping Advance(ulong bytes) =>
        bytes == 0 ? this : this with { Offset = File is null ? Offset : Offset + bytes, Paddr = Paddr + bytes };

    /// <summary>Whether the host side <paramref name="host"/> is exactly what this page-table side asks for (<see cref="Paddr"/> aside).</summary>
    internal bool IsMirroredBy(in MirrorMapping host) =>
        Kind != MirrorMappingKind.Unresolved && Kind == host.Kind && Rights == host.Rights && Shared == host.Shared
        && File == host.File && Offset == host.Offset;

    /// <inheritdoc/>
    public override string ToString()
    {
        string paddr = Paddr is { } p ? $"paddr 0x{p:x}" : "no known frame or region";
        return Kind switch
        {
            MirrorMappingKind.Absent => "nothing",
            MirrorMappingKind.Reserved => "reserved ---p",
            MirrorMappingKind.Anonymous => $"anonymous {Perms}",
            MirrorMappingKind.File => $"{Perms} {File} offset 0x{Offset:x} ({paddr})",
            _ => $"{Perms} {paddr}, which names no frame of the pool and no registered I/O memory region",
        };
    }
}

/// <summary>
/// A guest range over which the host does not mirror the page table: maximal, in that adjacent
/// pages differing in the same way (both sides continuing page by page) make one difference.
/// </summary>
/// <param name="Kind">How the host differs.</param>
/// <param name="Range">The guest range, page aligned.</param>
/// <param name="Expected">What the page table asks for at <c>Range.Start</c>.</param>
/// <param name="Actual">What the host has at <c>Range.Start</c>.</param>
public sealed record MirrorDifference(MirrorDifferenceKind Kind, VaddrRange Range, MirrorMapping Expected, MirrorMapping Actual)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Kind} at {Range}: page table {Expected}; host {Actual}";
}

/// <summary>
/// What <see cref="HostMirror.Compare"/> found: the first differences in address order, at most
/// the cap it was given, and how many there were in all.
/// </summary>
public sealed class MirrorReport : IReadOnlyList<MirrorDifference>
{
    private readonly MirrorDifference[] _listed;

    internal MirrorReport(MirrorDifference[] listed, int totalCount)
    {
        _listed = listed;
        TotalCount = totalCount;
    }

    /// <summary>Number of differences found, listed or not.</summary>
    public int TotalCount { get; }

    /// <summary>Whether differences were found beyond those listed (the cap was reached).</summary>
    public bool IsTruncated => TotalCount > _listed.Length;

    /// <summary>Number of differences listed.</summary>
    public int Count => _listed.Length;

    /// <summary>The listed difference at <paramref name="index"/>, in address order.</summary>
    public MirrorDifference this[int index] => _listed[index];

    /// <summary>The listed differences, in address order.</summary>
    public IEnumerator<MirrorDifference> GetEnumerator() => ((IEnumerable<MirrorDifference>)_listed).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>One line per listed difference, and how many more there were.</summary>
    public override string ToString()
    {
        if (TotalCount == 0) return "the host mirrors the page table";
        string lines = string.Join("\n", _listed);
        if (!IsTruncated) return lines;
        return (lines.Length > 0 ? lines + "\n" : "") + $"... and {TotalCount - Count} more ({TotalCount} differences in all)";
    }
}

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
            runs.Add(new Run(slot.Va, end, inPool
                ? new MirrorMapping(MirrorMappingKind.File, rights, true, HostFileId.FromStat(pool.FileIdentity), paddr, paddr)
                : new MirrorMapping(MirrorMappingKind.Unresolved, rights, true, null, 0, paddr)));
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
