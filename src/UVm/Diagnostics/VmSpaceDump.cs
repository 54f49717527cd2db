using System.Text;
using UVm.Areas;
using UVm.Spaces;

namespace UVm.Diagnostics;

/// <summary>
/// Looks into a space the way <c>/proc/PID/maps</c> and <c>smaps</c> look into a process: the
/// mapped runs with their rights and backing (frames and whether they are shared, I/O memory,
/// holes), and statistics (resident, private and shared pages, faults by kind, host mappings).
/// </summary>
/// <remarks>
/// <para>Each call reads the page table under one read-only cursor over the whole space, so it
/// waits for cursors of other threads and shows a consistent page table; it must not be called
/// on a thread that holds a cursor (it would wait for itself), e.g. inside a page-fault handler
/// that holds one. The cost is one step per mapped slot: for inspection, not for hot paths.</para>
/// <para>Example of <see cref="Describe(VmSpace)"/> (a handle to the frame at 0x2000 is held,
/// hence "shared x2"; the copy that stopped at 0x404000 counted one unresolved fault):</para>
/// <code>
/// VmSpace #7 [000000000000-000040000000)
/// 000000000000-000000400000 --- hole (1024 pages)
/// 000000400000-000000402000 rw- frames 000000000000-000000002000 private (2 pages)
/// 000000402000-000000403000 r-- frames 000000002000-000000003000 shared x2 (1 page)
/// 000000403000-000000404000 rw- frames 000000003000-000000004000 private (1 page)
/// 000000404000-000000600000 --- hole (508 pages)
/// 000000600000-000000800000 r-- iomem 400000000000-400000200000 (512 pages)
/// 000000800000-000040000000 --- hole (260096 pages)
/// resident 4 pages: private 3, shared 1; io memory 512 pages
/// faults: demand-zero 0, copy-on-write 0, rights-restored 0, user-handler 0, spurious 0, unresolved 1
/// host: 7 mappings (limit 100), 4 syscalls; page table: 5 nodes
/// </code>
/// </remarks>
public static class VmSpaceDump
{
    /// <summary>
    /// The runs of <paramref name="space"/> from address 0 to <see cref="VmSpace.Size"/>, holes
    /// included, in address order (see <see cref="MappingRun"/> for how pages are grouped).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    public static IReadOnlyList<MappingRun> Runs(VmSpace space)
    {
        ArgumentNullException.ThrowIfNull(space);
        space.ThrowIfDisposed();
        var runs = new List<MappingRun>();
        space.VisitMapped(slot => Add(runs, RunOf(space, slot)));
        ulong end = runs.Count > 0 ? runs[^1].Range.End : 0;
        if (end < space.Size) runs.Add(Hole(end, space.Size));
        return runs;
    }

    /// <summary>Resident, private, shared and I/O pages, faults by kind and host figures of <paramref name="space"/>.</summary>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    public static VmSpaceStatistics Statistics(VmSpace space) => Statistics(space, Runs(space));

    /// <summary>
    /// A maps-style description of <paramref name="space"/>: a header line, one line per run
    /// (<see cref="MappingRun.ToString"/>), then the <see cref="Statistics(VmSpace)"/> lines.
    /// Lines end with <c>\n</c>.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    public static string Describe(VmSpace space)
    {
        IReadOnlyList<MappingRun> runs = Runs(space);
        var text = new StringBuilder();
        text.Append(Header("VmSpace", space)).Append('\n');
        foreach (MappingRun run in runs) text.Append(run).Append('\n');
        foreach (string line in Statistics(space, runs).Lines()) text.Append(line).Append('\n');
        return text.ToString();
    }

    /// <summary>
    /// A description of <paramref name="space"/> by area: a header line; for each area a line
    /// <c>area start-end rwx kind</c> followed by its runs, indented, where a page with no frame
    /// yet is <c>not present</c>; then the runs mapped outside every area, under
    /// <c>outside areas</c>, if any; then the statistics lines and a line of the areas layer's
    /// own counts. Areas and page table are each read consistently, not atomically together.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The address space was disposed.</exception>
    public static string Describe(AddressSpace space)
    {
        ArgumentNullException.ThrowIfNull(space);
        IReadOnlyList<VmArea> areas = space.Areas;
        IReadOnlyList<MappingRun> runs = Runs(space.Space);
        var text = new StringBuilder();
        text.Append(Header("AddressSpace", space.Space)).Append($", {Count(areas.Count, "area")}\n");
        ulong covered = 0;
        var outside = new List<MappingRun>();
        foreach (VmArea area in areas)
        {
            Outside(runs, covered, area.Range.Start, outside);
            covered = area.Range.End;
            text.Append($"area {MappingRun.Hex(area.Range.Start)}-{MappingRun.Hex(area.Range.End)} {MappingRun.RightsText(area.Flags)} {area.Backend.Describe()}\n");
            foreach (MappingRun run in Within(runs, area.Range.Start, area.Range.End))
                text.Append("  ").Append(run.Line("not present")).Append('\n');
        }
        Outside(runs, covered, space.Space.Size, outside);
        if (outside.Count > 0)
        {
            text.Append("outside areas\n");
            foreach (MappingRun run in outside) text.Append("  ").Append(run).Append('\n');
        }
        foreach (string line in Statistics(space.Space, runs).Lines()) text.Append(line).Append('\n');
        AreaStats s = space.Stats;
        text.Append($"areas: demand-zero pages {s.DemandZeroPages} (fault-around {space.FaultAroundPages}), copy-on-write copies {s.CopyOnWriteCopies} ({Count(s.CopyOnWritePages, "page")}), " +
            $"takeovers {s.CopyOnWriteTakeovers} ({Count(s.CopyOnWriteTakeoverPages, "page")}), rights restored {s.SharedWriteRestores}, refused {s.Refused}\n");
        return text.ToString();
    }

    private static VmSpaceStatistics Statistics(VmSpace space, IReadOnlyList<MappingRun> runs)
    {
        ulong priv = 0, shared = 0, io = 0;
        foreach (MappingRun run in runs)
        {
            if (run.Backing == MappingBacking.IoMem) io += run.Pages;
            else if (run.Backing == MappingBacking.Frames && run.IsShared) shared += run.Pages;
            else if (run.Backing == MappingBacking.Frames) priv += run.Pages;
        }
        return new VmSpaceStatistics(
            space.Id, priv + shared, priv, shared, io,
            PageFaultCounts.Of(space, LiveObjects.AreasOf(space)),
            space.CountHostMappings(), space.MaxHostMappings, space.HostStats.Syscalls, space.PageTableNodes);
    }

    private static string Header(string what, VmSpace space) =>
        $"{what} #{space.Id} [{MappingRun.Hex(0)}-{MappingRun.Hex(space.Size)})";

    private static MappingRun RunOf(VmSpace space, PageSlot slot)
    {
        var range = new VaddrRange(slot.Va, slot.End);
        if (!slot.IsTracked) return new MappingRun(range, slot.Rights, slot.Prop.Cache, MappingBacking.IoMem, slot.Paddr, 0);
        // The mapping's own reference keeps the frame alive while the space's table is held.
        return new MappingRun(range, slot.Rights, slot.Prop.Cache, MappingBacking.Frames, slot.Paddr, space.Pool.ReferenceCountOf(slot.Paddr));
    }

    private static MappingRun Hole(ulong start, ulong end) =>
        new(new VaddrRange(start, end), PageFlags.None, CachePolicy.Writeback, MappingBacking.Hole, 0, 0);

    /// <summary>Appends <paramref name="next"/>, after the hole before it, merging it into the last run when it continues it.</summary>
    private static void Add(List<MappingRun> runs, MappingRun next)
    {
        ulong end = runs.Count > 0 ? runs[^1].Range.End : 0;
        if (next.Range.Start > end) runs.Add(Hole(end, next.Range.Start));
        if (runs.Count > 0 && runs[^1].Continues(next))
            runs[^1] = runs[^1] with { Range = new VaddrRange(runs[^1].Range.Start, next.Range.End) };
        else
            runs.Add(next);
    }

    /// <summary>The runs cut to <c>[start, end)</c>.</summary>
    private static IEnumerable<MappingRun> Within(IReadOnlyList<MappingRun> runs, ulong start, ulong end)
    {
        foreach (MappingRun run in runs)
        {
            if (run.Range.End <= start) continue;
            if (run.Range.Start >= end) yield break;
            yield return run.Slice(Math.Max(start, run.Range.Start), Math.Min(end, run.Range.End));
        }
    }

    /// <summary>Adds the mapped parts of <c>[start, end)</c> (no holes) to <paramref name="outside"/>.</summary>
    private static void Outside(IReadOnlyList<MappingRun> runs, ulong start, ulong end, List<MappingRun> outside)
    {
        if (start >= end) return;
        foreach (MappingRun run in Within(runs, start, end))
            if (run.Backing != MappingBacking.Hole) outside.Add(run);
    }

    private static string Count(long n, string what) => n == 1 ? $"1 {what}" : $"{n} {what}s";
}
