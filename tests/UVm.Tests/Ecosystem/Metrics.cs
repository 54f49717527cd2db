using System.Diagnostics.Metrics;
using System.Diagnostics.Tracing;
using NUnit.Framework;
using UVm.Areas;
using UVm.Diagnostics;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// Each instrument of the <c>UVm</c> meter moves when it should, and only then: a
/// <see cref="MeterListener"/> reads them all before and after one action and the test checks
/// the difference. Non-parallelizable: the instruments are process-wide.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class Metrics
{
    private const ulong Page = Paging.PageSize, MiB = 1UL << 20;
    private FramePool _pool = null!;
    private MeterReader _meter = null!;

    [SetUp]
    public void SetUp()
    {
        _pool = new FramePool(64 * MiB);
        _meter = new MeterReader();
    }

    [TearDown]
    public void TearDown()
    {
        VmSpace.Deactivate();
        _meter.Dispose();
        Assert.That(_pool.FramesInUse, Is.Zero, "frames leaked by the test");
        _pool.Dispose();
    }

    private VmSpaceOptions Options => new() { Size = 1UL << 30, Pool = _pool };

    private static string Kind(string kind) => $"{UVmMetrics.KindTag}={kind}";

    private static string Call(string call) => $"{UVmMetrics.CallTag}={call}";

    [Test]
    public void Meter_UVm_publishes_every_instrument_with_its_unit()
    {
        using var space = new VmSpace(Options); // the first space or pool creates the meter
        Assert.That(_meter.Published.Keys, Is.SupersetOf(UVmMetrics.InstrumentNames));
        Assert.That(_meter.Published[UVmMetrics.PageFaults], Is.EqualTo(("ObservableCounter`1", "{fault}")));
        Assert.That(_meter.Published[UVmMetrics.FramesAllocated], Is.EqualTo(("ObservableCounter`1", "{frame}")));
        Assert.That(_meter.Published[UVmMetrics.FramesInUse], Is.EqualTo(("ObservableUpDownCounter`1", "{frame}")));
        Assert.That(_meter.Published[UVmMetrics.FallibleBytes], Is.EqualTo(("ObservableCounter`1", "By")));
        Assert.That(_meter.Published[UVmMetrics.HostSyscalls], Is.EqualTo(("ObservableCounter`1", "{call}")));
        Assert.That(_meter.Published[UVmMetrics.HostMappings], Is.EqualTo(("ObservableGauge`1", "{mapping}")));
        Assert.That(_meter.Published[UVmMetrics.Spaces], Is.EqualTo(("ObservableUpDownCounter`1", "{space}")));
    }

    [Test]
    public void Unresolved_fault_counts_as_unresolved_only()
    {
        using var space = new VmSpace(Options);
        space.Activate();
        Snapshot before = _meter.Read();

        var reader = space.Reader(0x10_0000, 8);
        Assert.That(reader.ReadVal<ulong>().IsOk, Is.False);

        Snapshot delta = _meter.Read() - before;
        Assert.That(delta.Of(UVmMetrics.PageFaults), Is.EqualTo(new Dictionary<string, long> { [Kind("unresolved")] = 1 }));
    }

    [Test]
    public void Spurious_and_user_handler_faults_count_by_kind()
    {
        using var space = new VmSpace(Options);
        space.RegisterPageFaultHandler(MapZeroPage);
        space.Activate();
        Snapshot before = _meter.Read();

        var reader = space.Reader(0x10_0000, 8);
        Assert.That(reader.ReadVal<ulong>().IsOk, Is.True);                               // the user's handler maps it
        Assert.That(space.HandlePageFault(0x10_0000, PageFaultAccess.Read), Is.True);    // already allowed: spurious

        Snapshot delta = _meter.Read() - before;
        Assert.That(delta.Of(UVmMetrics.PageFaults), Is.EqualTo(new Dictionary<string, long> { [Kind("user_handler")] = 1, [Kind("spurious")] = 1 }));
    }

    [Test]
    public void Demand_zero_copy_on_write_and_rights_restored_faults_count_by_kind()
    {
        using USegment shared = _pool.AllocSegment(1);
        using var parent = new AddressSpace(Options) { FaultAroundPages = 1 };
        ulong lazy = parent.Map(Page, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Flags = PageFlags.RW });
        ulong linear = parent.Map(Page, new AreaBackend.LinearFrames(shared, 0), new VmMapOptions { Flags = PageFlags.RW });
        parent.Space.Activate();

        Snapshot before = _meter.Read();
        Write(parent.Space, lazy);                                 // demand-zero
        Snapshot afterDemandZero = _meter.Read();
        using AddressSpace child = parent.Fork();
        child.Space.Activate();
        Write(child.Space, lazy);                                  // copy-on-write (the parent still holds the frame)
        Write(child.Space, linear);                                // a linear page got write access back
        Snapshot after = _meter.Read();

        Assert.That((afterDemandZero - before).Of(UVmMetrics.PageFaults), Is.EqualTo(new Dictionary<string, long> { [Kind("demand_zero")] = 1 }));
        Assert.That((after - afterDemandZero).Of(UVmMetrics.PageFaults),
            Is.EqualTo(new Dictionary<string, long> { [Kind("copy_on_write")] = 1, [Kind("rights_restored")] = 1 }));
    }

    [Test]
    public void Frames_allocated_grow_and_frames_in_use_follow_the_pool()
    {
        Snapshot before = _meter.Read();
        USegment segment = _pool.AllocSegment(3);
        Snapshot allocated = _meter.Read();
        segment.Dispose();
        Snapshot freed = _meter.Read();

        Assert.That((allocated - before).Total(UVmMetrics.FramesAllocated), Is.EqualTo(3));
        Assert.That((allocated - before).Total(UVmMetrics.FramesInUse), Is.EqualTo(3));
        Assert.That((freed - allocated).Total(UVmMetrics.FramesAllocated), Is.Zero, "a counter never goes down");
        Assert.That((freed - allocated).Total(UVmMetrics.FramesInUse), Is.EqualTo(-3));
    }

    [Test]
    public void Frames_allocated_stay_counted_after_their_pool_is_disposed()
    {
        var pool = new FramePool(4 * MiB);
        Snapshot before = _meter.Read();
        pool.AllocFrame().Dispose();
        pool.Dispose();

        Assert.That((_meter.Read() - before).Total(UVmMetrics.FramesAllocated), Is.EqualTo(1));
    }

    [Test]
    public void Fallible_bytes_count_exactly_what_copies_moved_on_every_thread()
    {
        using var space = new VmSpace(Options);
        using (UFrame frame = _pool.AllocFrame())
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x10_0000, Page)))
            c.Map(frame, PageProperty.New(PageFlags.RW));
        Snapshot before = _meter.Read();

        space.Activate();
        var reader = space.Reader(0x10_0100, 2 * Page);
        CopyResult partial = reader.ReadFallible(new byte[2 * Page]);               // stops at the hole: 0xF00 bytes
        var writer = space.Writer(0x10_0000, 100);
        writer.FillZeros(100);                                                         // 100 more
        Deadlines.OnOtherThread(() =>
        {
            space.Activate();
            var w = space.Writer(0x10_0000, 1000);
            w.WriteFallible(new byte[1000]);                                           // 1000 more, on a thread that then ends
        }, "other writer");
        Snapshot after = _meter.Read();

        Assert.That(partial.Bytes, Is.EqualTo(0xF00));
        Assert.That((after - before).Total(UVmMetrics.FallibleBytes), Is.EqualTo(0xF00 + 100 + 1000));
        Assert.That((_meter.Read() - after).Total(UVmMetrics.FallibleBytes), Is.Zero, "an ended thread's bytes stay counted");
    }

    [Test]
    public void Host_syscalls_count_mmap_mprotect_and_fallocate()
    {
        using var pool = new FramePool(4 * MiB);
        using var space = new VmSpace(Options with { Pool = pool });
        Snapshot before = _meter.Read();

        using (UFrame frame = pool.AllocFrame())
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x10_0000, Page)))
            c.Map(frame, PageProperty.New(PageFlags.RW));                                // one mmap
        Snapshot mapped = _meter.Read();
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x10_0000, Page)))
            c.ProtectNext(Page, (ref PageFlags f, ref CachePolicy _) => f = PageFlags.R);  // one mprotect, at dispose
        Snapshot protectedOnce = _meter.Read();
        using (CursorMut c = space.CursorMut(VaddrRange.FromLength(0x10_0000, Page))) c.Unmap(Page); // one mmap back to PROT_NONE
        pool.Trim();                                                                     // the freed frame is punched: one fallocate
        Snapshot after = _meter.Read();

        Assert.That((mapped - before).Of(UVmMetrics.HostSyscalls), Is.EqualTo(new Dictionary<string, long> { [Call("mmap")] = 1 }));
        Assert.That((protectedOnce - mapped).Of(UVmMetrics.HostSyscalls), Is.EqualTo(new Dictionary<string, long> { [Call("mprotect")] = 1 }));
        Assert.That((after - protectedOnce).Of(UVmMetrics.HostSyscalls), Is.EqualTo(new Dictionary<string, long> { [Call("mmap")] = 1, [Call("fallocate")] = 1 }));
    }

    [Test]
    public void Host_mappings_gauge_follows_each_live_space()
    {
        var space = new VmSpace(Options);
        long id = VmSpaceDump.Statistics(space).SpaceId;
        string tag = $"{UVmMetrics.SpaceTag}={id}";
        Assert.That(_meter.Read().Of(UVmMetrics.HostMappings)[tag], Is.EqualTo(1), "a fresh arena is one mapping");

        for (ulong i = 0; i < 3; i++)
        {
            using UFrame frame = _pool.AllocFrame();
            using CursorMut c = space.CursorMut(VaddrRange.FromLength(0x10_0000 + 2 * i * Page, Page));
            c.Map(frame, PageProperty.New(PageFlags.RW));
        }
        long bound = _meter.Read().Of(UVmMetrics.HostMappings)[tag];
        int exact = space.CountHostMappings();
        space.Dispose();

        Assert.That(bound, Is.EqualTo(7), "three separate pages: two more mappings each, at most");
        Assert.That(exact, Is.EqualTo(7), "here the bound is exact: hole, page, hole, page, hole, page, hole");
        Assert.That(_meter.Read().Of(UVmMetrics.HostMappings), Does.Not.ContainKey(tag), "a disposed space leaves the gauge");
    }

    [Test]
    public void Spaces_count_live_spaces_and_disposed_ones_keep_their_counts()
    {
        Snapshot before = _meter.Read();
        var space = new VmSpace(Options);
        Snapshot created = _meter.Read();
        space.Activate();
        var reader = space.Reader(0, 1);
        Assert.That(reader.ReadVal<byte>().IsOk, Is.False);                             // one unresolved fault
        space.Dispose();
        Snapshot disposed = _meter.Read();

        Assert.That((created - before).Total(UVmMetrics.Spaces), Is.EqualTo(1));
        Assert.That((disposed - created).Total(UVmMetrics.Spaces), Is.EqualTo(-1));
        Assert.That((disposed - before).Of(UVmMetrics.PageFaults), Is.EqualTo(new Dictionary<string, long> { [Kind("unresolved")] = 1 }),
            "the fault stays counted after its space is gone");
    }

    [Test, CancelAfter(90_000)]
    public void Instruments_reach_the_event_source_dotnet_counters_reads()
    {
        // dotnet-counters starts a session of the runtime's "System.Diagnostics.Metrics" event
        // source, over EventPipe, with the meter names asked for; an in-process EventListener can
        // start the same session and see what dotnet-counters would print.
        using var space = new VmSpace(Options);
        using var listener = new MetricsEventListener(UVmMetrics.MeterName);
        Assert.That(Deadlines.TryUntil(() => listener.HasSeenAll(UVmMetrics.InstrumentNames)), Is.True,
            $"instruments seen: {string.Join(", ", listener.Seen)}; errors: {string.Join("; ", listener.Errors)}");
    }

    private static bool MapZeroPage(VmSpace space, in PageFaultInfo info)
    {
        using UFrame frame = space.Pool.AllocFrame();
        using CursorMut c = space.CursorMut(VaddrRange.FromLength(info.Address & ~(Page - 1), Page));
        c.Map(frame, PageProperty.New(PageFlags.RW));
        return true;
    }

    private static void Write(VmSpace space, ulong va)
    {
        var writer = space.Writer(va, 1);
        Assert.That(writer.WriteFallible(new byte[] { 7 }).IsOk, Is.True, $"write at 0x{va:x}");
    }

    /// <summary>The latest value of every measurement of the <c>UVm</c> meter, keyed by instrument and tags.</summary>
    private sealed class Snapshot(Dictionary<string, Dictionary<string, long>> values)
    {
        internal Dictionary<string, Dictionary<string, long>> Values { get; } = values;

        /// <summary>The non-zero values of <paramref name="instrument"/>, by tags (<c>"kind=spurious"</c>).</summary>
        internal Dictionary<string, long> Of(string instrument) =>
            Values.TryGetValue(instrument, out var v) ? v.Where(p => p.Value != 0).ToDictionary() : new();

        internal long Total(string instrument) => Values.TryGetValue(instrument, out var v) ? v.Values.Sum() : 0;

        public static Snapshot operator -(Snapshot after, Snapshot before)
        {
            var result = new Dictionary<string, Dictionary<string, long>>();
            foreach ((string name, var series) in after.Values)
            {
                var d = result[name] = new Dictionary<string, long>();
                foreach ((string tags, long value) in series)
                    d[tags] = value - (before.Values.TryGetValue(name, out var b) && b.TryGetValue(tags, out long old) ? old : 0);
            }
            return new Snapshot(result);
        }
    }

    /// <summary>A <see cref="MeterListener"/> on the <c>UVm</c> meter that polls its observable instruments.</summary>
    private sealed class MeterReader : IDisposable
    {
        private readonly MeterListener _listener = new();
        private Dictionary<string, Dictionary<string, long>> _values = new();

        internal MeterReader()
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name != UVmMetrics.MeterName) return;
                lock (Published) Published[instrument.Name] = (instrument.GetType().Name, instrument.Unit ?? "");
                listener.EnableMeasurementEvents(instrument);
            };
            _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
            {
                string key = string.Join(',', tags.ToArray().Select(t => $"{t.Key}={t.Value}"));
                if (!_values.TryGetValue(instrument.Name, out var series)) _values[instrument.Name] = series = new();
                series[key] = value;
            });
            _listener.Start();
            UVmMetrics.EnsureCreated();
        }

        internal Dictionary<string, (string Type, string Unit)> Published { get; } = new();

        internal Snapshot Read()
        {
            _values = new Dictionary<string, Dictionary<string, long>>();
            _listener.RecordObservableInstruments();
            return new Snapshot(_values);
        }

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>A session of the <c>System.Diagnostics.Metrics</c> event source, as <c>dotnet-counters monitor --counters NAME</c> starts one.</summary>
    private sealed class MetricsEventListener : EventListener
    {
        private readonly HashSet<string> _seen = new();
        private readonly List<string> _errors = new();
        private string? _meter;
        private EventSource? _source;

        internal MetricsEventListener(string meter)
        {
            _meter = meter;
            if (_source is { } pending) Enable(pending); // created before this constructor ran
        }

        internal string[] Seen { get { lock (_seen) return _seen.ToArray(); } }
        internal string[] Errors { get { lock (_seen) return _errors.ToArray(); } }

        internal bool HasSeenAll(IEnumerable<string> names)
        {
            lock (_seen) return names.All(_seen.Contains);
        }

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name != "System.Diagnostics.Metrics") return;
            _source = source;
            if (_meter is not null) Enable(source);
        }

        private void Enable(EventSource source) =>
            EnableEvents(source, EventLevel.Informational, (EventKeywords)0x3, new Dictionary<string, string?>
            {
                ["SessionId"] = "uvm-tests", ["Metrics"] = _meter, ["RefreshInterval"] = "0.2",
                ["MaxTimeSeries"] = "1000", ["MaxHistograms"] = "10",
            });

        protected override void OnEventWritten(EventWrittenEventArgs e)
        {
            if (e.EventSource.Name != "System.Diagnostics.Metrics" || e.Payload is null || e.PayloadNames is null) return;
            int meter = e.PayloadNames.IndexOf("meterName"), instrument = e.PayloadNames.IndexOf("instrumentName");
            lock (_seen)
            {
                if (e.EventName is "Error" or "ObservableInstrumentCallbackError" or "MultipleSessionsNotSupportedError")
                    _errors.Add($"{e.EventName}: {string.Join(", ", e.Payload)}");
                else if (meter >= 0 && instrument >= 0 && e.EventName!.EndsWith("ValuePublished", StringComparison.Ordinal) && (string?)e.Payload[meter] == _meter)
                    _seen.Add((string)e.Payload[instrument]!);
            }
        }
    }
}
