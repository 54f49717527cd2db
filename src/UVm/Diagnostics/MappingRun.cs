using System.Globalization;

namespace UVm.Diagnostics;

/// <summary>What backs a <see cref="MappingRun"/>.</summary>
public enum MappingBacking
{
    /// <summary>Nothing is mapped.</summary>
    Hole,
    /// <summary>Frames of the space's pool, reference counted.</summary>
    Frames,
    /// <summary>Untracked I/O memory (<see cref="Spaces.IoMem"/>).</summary>
    IoMem,
}

/// <summary>
/// A maximal run of a space's pages that one line of a dump describes: adjacent pages with the
/// same rights and cache policy, the same backing at physical addresses that continue each other,
/// and, for frames, the same reference count.
/// </summary>
/// <param name="Range">The guest addresses of the run.</param>
/// <param name="Rights">The pages' rights (<see cref="PageFlags.RWX"/> bits only); none for a hole.</param>
/// <param name="Cache">The pages' cache policy.</param>
/// <param name="Backing">What is mapped.</param>
/// <param name="Paddr">Physical address of the run's first page (0 for a hole).</param>
/// <param name="ReferenceCount">For frames: the reference count every frame of the run has (1 = private: only this
/// mapping holds it; more = shared with another space's mapping or a handle). 0 otherwise.</param>
public sealed record MappingRun(VaddrRange Range, PageFlags Rights, CachePolicy Cache, MappingBacking Backing, ulong Paddr, int ReferenceCount)
{
    /// <summary>Pages in the run.</summary>
    public ulong Pages => Range.Length / Paging.PageSize;

    /// <summary>Whether the run's frames have more than one reference.</summary>
    public bool IsShared => Backing == MappingBacking.Frames && ReferenceCount > 1;

    /// <summary>
    /// The run as a dump line: <c>start-end rwx backing (n pages)</c>, addresses as 12 hex digits,
    /// e.g. <c>000000400000-000000402000 rw- frames 000000000000-000000002000 private (2 pages)</c>.
    /// </summary>
    public override string ToString() => Line(Backing == MappingBacking.Hole ? "hole" : null);

    /// <summary>The dump line, with <paramref name="holeName"/> naming a hole when given.</summary>
    internal string Line(string? holeName)
    {
        string backing = Backing switch
        {
            MappingBacking.Frames => $"frames {Hex(Paddr)}-{Hex(Paddr + Range.Length)} {(ReferenceCount == 1 ? "private" : $"shared x{ReferenceCount}")}",
            MappingBacking.IoMem => $"iomem {Hex(Paddr)}-{Hex(Paddr + Range.Length)}",
            _ => holeName ?? "hole",
        };
        string cache = Cache == CachePolicy.Writeback ? "" : $", cache {Cache}";
        string pages = Pages == 1 ? "1 page" : $"{Pages} pages";
        return $"{Hex(Range.Start)}-{Hex(Range.End)} {RightsText(Rights)} {backing}{cache} ({pages})";
    }

    /// <summary>The part <c>[start, end)</c> of the run, its physical address moved accordingly.</summary>
    internal MappingRun Slice(ulong start, ulong end) => this with
    {
        Range = new VaddrRange(start, end),
        Paddr = Backing == MappingBacking.Hole ? 0 : Paddr + (start - Range.Start),
    };

    /// <summary>Whether <paramref name="next"/> continues this run exactly.</summary>
    internal bool Continues(MappingRun next) =>
        next.Range.Start == Range.End && next.Backing == Backing && next.Rights == Rights && next.Cache == Cache
        && next.ReferenceCount == ReferenceCount && (Backing == MappingBacking.Hole || next.Paddr == Paddr + Range.Length);

    internal static string Hex(ulong value) => value.ToString("x12", CultureInfo.InvariantCulture);

    internal static string RightsText(PageFlags f) =>
        $"{((f & PageFlags.R) != 0 ? 'r' : '-')}{((f & PageFlags.W) != 0 ? 'w' : '-')}{((f & PageFlags.X) != 0 ? 'x' : '-')}";
}
