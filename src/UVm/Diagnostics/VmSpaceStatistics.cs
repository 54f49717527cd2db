using UVm.Spaces;

namespace UVm.Diagnostics;

/// <summary>A snapshot of what a space holds and what it has done (see <see cref="VmSpaceDump.Statistics(VmSpace)"/>).</summary>
/// <param name="SpaceId">The number tagging the space's per-space measurements (<see cref="UVmMetrics.SpaceTag"/>).</param>
/// <param name="ResidentPages">Pages mapped to frames of the pool (<see cref="PrivatePages"/> + <see cref="SharedPages"/>).</param>
/// <param name="PrivatePages">Resident pages whose frame has one reference: this mapping.</param>
/// <param name="SharedPages">Resident pages whose frame has more references (another space's mapping, or a handle).</param>
/// <param name="IoMemPages">Pages mapped to I/O memory.</param>
/// <param name="Faults">Faults by kind since the space was created.</param>
/// <param name="HostMappings">Host mappings (VMAs) of the arena, counted exactly from <c>/proc/self/maps</c>.</param>
/// <param name="HostMappingLimit">The space's budget of host mappings (<see cref="VmSpace.MaxHostMappings"/>).</param>
/// <param name="HostSyscalls">Host syscalls made for the space (<see cref="Host.HostStats.Syscalls"/>).</param>
/// <param name="PageTableNodes">Page-table nodes allocated, the root included.</param>
public sealed record VmSpaceStatistics(
    long SpaceId,
    ulong ResidentPages,
    ulong PrivatePages,
    ulong SharedPages,
    ulong IoMemPages,
    PageFaultCounts Faults,
    int HostMappings,
    int HostMappingLimit,
    long HostSyscalls,
    long PageTableNodes)
{
    /// <summary>The statistics as the lines that end a dump.</summary>
    public override string ToString() => string.Join('\n', Lines());

    internal IEnumerable<string> Lines()
    {
        yield return $"resident {Pages(ResidentPages)}: private {PrivatePages}, shared {SharedPages}; io memory {Pages(IoMemPages)}";
        yield return $"faults: {Faults}";
        yield return $"host: {HostMappings} mappings (limit {HostMappingLimit}), {HostSyscalls} syscalls; page table: {PageTableNodes} nodes";
    }

    private static string Pages(ulong n) => n == 1 ? "1 page" : $"{n} pages";
}
