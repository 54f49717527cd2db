using System.Diagnostics.Metrics;
using UVm.Frames;
using UVm.Host;
using UVm.Spaces;

namespace UVm.Diagnostics;

/// <summary>
/// UVm's <see cref="System.Diagnostics.Metrics"/> instruments, in one <see cref="Meter"/> named
/// <see cref="MeterName"/>: <c>dotnet-counters monitor --counters UVm -p PID</c> shows them, and
/// any <see cref="MeterListener"/> or OpenTelemetry exporter can collect them.
/// </summary>
/// <remarks>
/// <para>Every instrument is observable: it reads, when a listener asks, counters that UVm keeps
/// anyway (a space's fault counts and <see cref="HostStats"/>, a pool's frame counts) over a weak
/// registry of live spaces and pools; disposed ones keep contributing what they counted. So
/// metrics cost nothing on hot paths, whether or not anyone listens. The one counter added for
/// them, behind <see cref="FallibleBytes"/>, is per thread (<c>Faults.ThreadAccess</c>).</para>
/// <para>The meter and its instruments are created with the first space or pool.</para>
/// </remarks>
public static class UVmMetrics
{
    /// <summary>The name of UVm's meter.</summary>
    public const string MeterName = "UVm";

    /// <summary>
    /// Counter of page faults that reached UVm's resolution, tagged <see cref="KindTag"/> with
    /// the kinds of <see cref="PageFaultCounts"/> (<c>demand_zero</c>, <c>copy_on_write</c>,
    /// <c>rights_restored</c>, <c>user_handler</c>, <c>spurious</c>, <c>unresolved</c>). Unit <c>{fault}</c>.
    /// </summary>
    public const string PageFaults = "uvm.page_faults";

    /// <summary>Counter of frames handed out by every pool (a segment of n frames counts n). Unit <c>{frame}</c>.</summary>
    public const string FramesAllocated = "uvm.frames.allocated";

    /// <summary>Up-down counter of frames in use in every pool (<see cref="FramePool.FramesInUse"/>). Unit <c>{frame}</c>.</summary>
    public const string FramesInUse = "uvm.frames.in_use";

    /// <summary>
    /// Counter of bytes moved by fallible copies and zero fills of guest memory, faulted copies'
    /// partial counts included (single-value loads, stores and atomics are not counted). Unit <c>By</c>.
    /// </summary>
    public const string FallibleBytes = "uvm.io.fallible_bytes";

    /// <summary>
    /// Counter of host syscalls that changed guest arenas or frame pools, tagged <see cref="CallTag"/>:
    /// <c>mmap</c>, <c>mprotect</c> (<see cref="HostStats"/>) and <c>fallocate</c> (frames punched
    /// back to the host, <see cref="FramePool.PunchCalls"/>). Unit <c>{call}</c>.
    /// </summary>
    public const string HostSyscalls = "uvm.host.syscalls";

    /// <summary>
    /// Gauge of each live space's host mappings (VMAs), tagged <see cref="SpaceTag"/>: the upper
    /// bound UVm keeps to stay under the space's budget (exact after each recount, at most two
    /// more per host operation since). Reading it costs no syscall. Unit <c>{mapping}</c>.
    /// </summary>
    public const string HostMappings = "uvm.host.mappings";

    /// <summary>Up-down counter of spaces created and not yet disposed. Unit <c>{space}</c>.</summary>
    public const string Spaces = "uvm.spaces";

    /// <summary>Tag of <see cref="PageFaults"/>: the kind of fault.</summary>
    public const string KindTag = "kind";

    /// <summary>Tag of <see cref="HostSyscalls"/>: the syscall.</summary>
    public const string CallTag = "call";

    /// <summary>Tag of <see cref="HostMappings"/>: the space's number (<see cref="VmSpaceStatistics.SpaceId"/>).</summary>
    public const string SpaceTag = "space";

    private static readonly Meter s_meter = CreateMeter();

    /// <summary>The names of every instrument of the meter.</summary>
    public static IReadOnlyList<string> InstrumentNames { get; } =
        [PageFaults, FramesAllocated, FramesInUse, FallibleBytes, HostSyscalls, HostMappings, Spaces];

    /// <summary>Creates the meter and its instruments, if not yet done (the first space or pool does this).</summary>
    public static void EnsureCreated() => GC.KeepAlive(s_meter);

    private static Meter CreateMeter()
    {
        var meter = new Meter(MeterName, typeof(UVmMetrics).Assembly.GetName().Version?.ToString());
        meter.CreateObservableCounter(PageFaults, ObservePageFaults, "{fault}", "Page faults that reached UVm's resolution, by kind");
        meter.CreateObservableCounter(FramesAllocated, () => LiveObjects.Frames().Allocated, "{frame}", "Frames handed out by UVm's frame pools");
        meter.CreateObservableUpDownCounter(FramesInUse, () => LiveObjects.Frames().InUse, "{frame}", "Frames in use in UVm's frame pools");
        meter.CreateObservableCounter(FallibleBytes, Faults.ThreadAccess.TotalBytes, "By", "Bytes moved by fallible copies and zero fills of guest memory");
        meter.CreateObservableCounter(HostSyscalls, ObserveHostSyscalls, "{call}", "Host syscalls that changed guest arenas or frame pools");
        meter.CreateObservableGauge(HostMappings, ObserveHostMappings, "{mapping}", "Upper bound on each live space's host mappings");
        meter.CreateObservableUpDownCounter(Spaces, LiveObjects.LiveSpaces, "{space}", "Live UVm spaces");
        return meter;
    }

    private static IEnumerable<Measurement<long>> ObservePageFaults()
    {
        PageFaultCounts counts = LiveObjects.Faults();
        foreach ((string kind, long count) in counts.ByKind())
            yield return new Measurement<long>(count, new KeyValuePair<string, object?>(KindTag, kind));
    }

    private static IEnumerable<Measurement<long>> ObserveHostSyscalls()
    {
        (long mmap, long mprotect, long fallocate) = LiveObjects.HostSyscalls();
        yield return new Measurement<long>(mmap, new KeyValuePair<string, object?>(CallTag, "mmap"));
        yield return new Measurement<long>(mprotect, new KeyValuePair<string, object?>(CallTag, "mprotect"));
        yield return new Measurement<long>(fallocate, new KeyValuePair<string, object?>(CallTag, "fallocate"));
    }

    private static IEnumerable<Measurement<long>> ObserveHostMappings()
    {
        foreach ((long id, long mappings) in LiveObjects.HostMappings())
            yield return new Measurement<long>(mappings, new KeyValuePair<string, object?>(SpaceTag, id));
    }
}
