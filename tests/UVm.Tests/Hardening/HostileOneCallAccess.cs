using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Interop;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Reliability;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Hardening;

/// <summary>
/// The one-call accessors attacked as the guest and a careless embedder would: guest ranges of
/// every extreme (checked byte for byte against a model), accesses racing <c>Dispose</c> on other
/// threads, a disposed space whose host range another mapping has taken, handlers that dispose
/// the space or throw.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class HostileOneCallAccess
{
    private const ulong Page = Paging.PageSize;
    private const ulong SpaceSize = 4UL << 20;
    private FramePool _pool = null!;

    [SetUp]
    public void CreatePool() => _pool = new FramePool(64UL << 20);

    [TearDown]
    public void CheckPool()
    {
        Assert.That(_pool.FramesInUse, Is.Zero, "frames leaked");
        _pool.Dispose();
    }

    private static byte PatternAt(ulong va) => (byte)(1 + (va * 7 + (va >> 12)) % 253);

    /// <summary>A 4 MiB space with every third page mapped RW and patterned.</summary>
    private VmSpace PatternedSpace(out HashSet<ulong> mapped)
    {
        var space = new VmSpace(new VmSpaceOptions { Size = SpaceSize, Pool = _pool });
        mapped = new HashSet<ulong>();
        for (ulong p = 0; p < SpaceSize; p += 3 * Page)
        {
            var bytes = new byte[Page];
            for (int i = 0; i < bytes.Length; i++) bytes[i] = PatternAt(p + (ulong)i);
            GuestMemory.MapNewFrame(space, p, bytes);
            mapped.Add(p);
        }
        return space;
    }

    /// <summary>
    /// What gathering <paramref name="want"/> bytes from <paramref name="va"/> must do: bytes before
    /// the first byte that is outside the space or on an unmapped page, and that byte's fault.
    /// </summary>
    private static (ulong Bytes, PageFaultInfo? Fault) Model(ulong va, ulong want, HashSet<ulong> mapped)
    {
        if (want == 0) return (0, null);
        if (va >= SpaceSize) return (0, new PageFaultInfo(va, PageFaultAccess.Read, PageFaultKind.OutOfRange, 11));
        ulong end = Math.Min(SpaceSize, va + Math.Min(want, SpaceSize - va));
        for (ulong page = va & ~(Page - 1); page < end; page += Page)
            if (!mapped.Contains(page))
            {
                ulong at = Math.Max(page, va);
                return (at - va, new PageFaultInfo(at, PageFaultAccess.Read, PageFaultKind.NotPresent, 11));
            }
        return end - va == want ? (want, null) : (end - va, new PageFaultInfo(SpaceSize, PageFaultAccess.Read, PageFaultKind.OutOfRange, 11));
    }

    private static ulong Extreme(Random r, ulong size) => r.Next(10) switch
    {
        0 => 0,
        1 => size - (ulong)r.Next(1, 64),
        2 => size + (ulong)r.Next(0, 64),
        3 => ulong.MaxValue - (ulong)r.Next(0, 64),
        4 => (1UL << r.Next(40, 64)) + (ulong)r.Next(-2, 3),
        5 => (ulong)r.NextInt64(),
        _ => (ulong)r.NextInt64(0, (long)size),
    };

    [Test, CancelAfter(120_000)]
    public void Gather_over_hostile_ranges_matches_the_model_byte_for_byte()
    {
        int seed = Harness.Seed("hostile gather");
        var random = new Random(seed);
        using VmSpace space = PatternedSpace(out HashSet<ulong> mapped);
        int faults = 0, outside = 0;
        for (int round = 0; round < 300; round++)
        {
            var ranges = new GuestRange[random.Next(0, 6)];
            for (int i = 0; i < ranges.Length; i++)
            {
                ulong va = Extreme(random, SpaceSize);
                ulong len = random.Next(6) switch
                {
                    0 => 0,
                    1 => ulong.MaxValue - (ulong)random.Next(0, 3),
                    2 => unchecked(0UL - va),               // va + len wraps to exactly 0
                    3 => (ulong)random.Next(1, 3 * (int)Page),
                    _ => (ulong)random.Next(1, 64),
                };
                ranges[i] = new GuestRange(va, len);
            }
            var buffer = new byte[random.Next(0, 4 * (int)Page)];
            Array.Fill(buffer, (byte)0xEE);

            CopyResult r = space.Gather(ranges, buffer);

            // The model: ranges in order, each cut to the room left, stop at the first fault.
            ulong done = 0;
            PageFaultInfo? fault = null;
            foreach (GuestRange g in ranges)
            {
                if (done == (ulong)buffer.Length) break;
                ulong want = Math.Min(g.Length, (ulong)buffer.Length - done);
                (ulong bytes, fault) = Model(g.Va, want, mapped);
                for (ulong i = 0; i < bytes; i++)
                    if (buffer[done + i] != PatternAt(g.Va + i)) Assert.Fail($"round {round} (seed {seed}): byte {done + i} from 0x{g.Va + i:x} is wrong");
                done += bytes;
                if (fault is not null) break;
            }
            string what = $"round {round} (seed {seed}): [{string.Join(", ", ranges.Select(g => $"0x{g.Va:x}+0x{g.Length:x}"))}] into {buffer.Length}";
            Assert.That(r, Is.EqualTo(new CopyResult(done, fault is null ? null : UVmError.PageFault, fault)), what);
            Assert.That(buffer.Skip((int)done), Is.All.EqualTo((byte)0xEE), what + ": nothing past the count");
            if (fault is { } f) { faults++; if (f.Kind == PageFaultKind.OutOfRange) outside++; }
        }
        TestContext.Progress.WriteLine($"[hostile gather] 300 rounds (seed {seed}): {faults} faulted, {outside} outside the space");
        Assert.That(outside, Is.GreaterThan(10), "precondition: the ranges really went outside the space");
        Assert.That(GuestMemory.Slots(space, new VaddrRange(0, SpaceSize)).Count, Is.EqualTo(mapped.Count), "nothing was mapped or unmapped");
    }

    [Test, CancelAfter(120_000)]
    public void One_call_accesses_racing_Dispose_return_results_and_never_throw()
    {
        int seed = Harness.Seed("one-call dispose race");
        var random = new Random(seed);
        int rounds = 0, cut = 0, ok = 0;
        var budget = new LoopBudget("one-call dispose race", TimeSpan.FromSeconds(100));
        while (rounds < 200 && (cut < 10 || rounds < 40))
        {
            rounds++;
            budget.Check(() => $"{rounds} rounds");
            var areas = new AddressSpace(new VmSpaceOptions { Size = 64UL << 20, Pool = _pool });
            VmSpace space = areas.Space;
            ulong va = areas.Map(4UL << 20, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Flags = PageFlags.RW });
            using var started = new CountdownEvent(2);
            var workers = TestThread.StartAll(2, i => $"accessor {i}", i =>
            {
                var buffer = new byte[1UL << 20];
                started.Signal();
                for (int k = 0; k < 64; k++)
                {
                    bool failed = (k % 6) switch
                    {
                        0 => !space.Read(va, buffer).IsOk,
                        1 => !space.Gather([new GuestRange(va + (1UL << 20), 1UL << 20), new GuestRange(va, ulong.MaxValue)], buffer).IsOk,
                        2 => !space.Scatter(buffer, [new GuestRange(va + (2UL << 20), 1UL << 20)]).IsOk,
                        3 => !space.TryWrite(va + (ulong)k * Page, (ulong)k),
                        4 => !space.AtomicSwap(va + (3UL << 20) + (ulong)k * 8, (ulong)k).IsOk,
                        _ => !space.ReadVal<ulong>(va + (ulong)k * 8).IsOk,
                    };
                    if (failed)
                    {
                        Assert.That(space.IsDisposed, Is.True, "only Dispose fails an access here");
                        Interlocked.Increment(ref cut);
                        return;
                    }
                }
                Interlocked.Increment(ref ok);
            });
            Assert.That(started.Wait(Deadlines.Generous), Is.True, "both accessors started");
            Thread.SpinWait(random.Next(0, 50_000));
            areas.Dispose();
            TestThread.JoinAll(workers);
            Assert.That(space.TryRead(va, out ulong _), Is.False, "after Dispose: a result, not an exception");
        }
        TestContext.Progress.WriteLine($"[one-call dispose race] {rounds} rounds (seed {seed}): {cut} accessors cut by Dispose, {ok} finished");
        Assert.That(cut, Is.GreaterThanOrEqualTo(1), "precondition: Dispose really raced some accesses");
    }

    [Test, CancelAfter(30_000)]
    public void A_disposed_space_never_touches_its_old_host_range()
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 2UL << 20, Pool = _pool });
        GuestMemory.MapNewFrame(space, 0x1000, new byte[] { 1 });
        nint host = space.HostBase + 0x1000;
        space.Dispose();

        // Something else takes the address: an anonymous page nobody has touched.
        nint taken = Libc.Mmap(host, (nuint)Page, Libc.PROT_READ | Libc.PROT_WRITE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED_NOREPLACE, -1, 0);
        Assert.That(taken, Is.EqualTo(host), "precondition: the disposed space's address could be taken");
        try
        {
            Assert.That(GuestMemory.IsHostPagePresent(host), Is.False, "precondition: the new page is not yet populated");
            var buffer = new byte[16];
            var results = new (string, bool)[]
            {
                ("TryRead", space.TryRead(0x1000, out ulong _)),
                ("TryWrite", space.TryWrite(0x1000, 1UL)),
                ("ReadVal", space.ReadVal<uint>(0x1008).IsOk),
                ("WriteVal", space.WriteVal(0x1008, 1u).IsOk),
                ("Read", space.Read(0x1000, buffer).IsOk),
                ("Write", space.Write(0x1000, buffer).IsOk),
                ("Gather", space.Gather([new GuestRange(0x1000, 16)], buffer).IsOk),
                ("Scatter", space.Scatter(buffer, [new GuestRange(0x1000, 16)]).IsOk),
                ("AtomicLoad64", space.AtomicLoad64(0x1000).IsOk),
                ("AtomicStore", space.AtomicStore(0x1000, 1u).IsOk),
                ("AtomicSwap", space.AtomicSwap(0x1000, 1UL).IsOk),
                ("AtomicCompareExchange", space.AtomicCompareExchange(0x1000, 0UL, 1UL).IsOk),
            };
            Assert.That(results.Where(r => r.Item2).Select(r => r.Item1), Is.Empty, "every access failed");
            Assert.That(GuestMemory.IsHostPagePresent(host), Is.False, "no access reached the other mapping (a load or store would populate it)");
        }
        finally
        {
            Libc.Munmap(taken, (nuint)Page);
        }
    }


    [Test, CancelAfter(30_000)]
    public void A_handler_that_disposes_the_space_fails_the_access_with_a_result()
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 4UL << 20, Pool = _pool });
        space.RegisterPageFaultHandler((s, in _) =>
        {
            s.Dispose();
            return true;
        });
        IoResult<ulong> r = space.ReadVal<ulong>(0x2000);
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Fault!.Value.Address, Is.EqualTo(0x2000UL));
        Assert.That(space.IsDisposed, Is.True);
        Assert.That(space.Read(0x2000, new byte[8]).Bytes, Is.Zero);
    }

    [Test, CancelAfter(30_000)]
    public void A_handler_that_throws_propagates_and_leaves_the_gate()
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 4UL << 20, Pool = _pool });
        space.RegisterPageFaultHandler((_, in _) => throw new InvalidTimeZoneException("handler bug"));
        Assert.Throws<InvalidTimeZoneException>(() => space.TryRead(0x2000, out ulong _));
        Assert.Throws<InvalidTimeZoneException>(() => space.Gather([new GuestRange(0x2000, 8)], new byte[8]));
        Exception? failed = null;
        var disposer = TestThread.Start("disposer", () =>
        {
            try { space.Dispose(); }
            catch (Exception e) { failed = e; }
        });
        disposer.Join(what: "Dispose on another thread, which would wait for an access still inside the gate");
        Assert.That(failed, Is.Null);
    }
}
