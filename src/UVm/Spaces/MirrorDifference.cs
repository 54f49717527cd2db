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
/// <param name="Shared">Whether the mapping is shared (<c>MAP_SHARED</c>, the <c>s</c> of <c>/proc/self/maps</c>); every mapping the table asks for is, but a host copy's (<c>MAP_PRIVATE</c>: the host copies the page on its first write).</param>
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

