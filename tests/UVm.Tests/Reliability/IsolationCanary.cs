using NUnit.Framework;
using UVm.Areas;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.TestSupport;
using static UVm.Tests.Reliability.Harness;

namespace UVm.Tests.Reliability;

/// <summary>
/// Isolation canary: one space's frames hold a secret; they are unmapped (or replaced) and freed
/// while a thread of that space copies from the range in a loop, then reused at once by a second
/// space that writes its own pattern, watched by a thread of its own. Every read must either
/// fault or return its own space's bytes: never the other space's, never a freed frame's. The pool
/// is tiny and trimmed every round, so the freed frames really are the ones handed out next.
/// This is the deferred release at work: a frame leaves the host before it is freed.
/// Ordinary runs do a fixed number of rounds and check, by counts, that the canary proved
/// something: frames really went from one space to the other, and the watchers really read
/// while the rounds went on. The soak (<c>UVM_SOAK=1</c>) runs each canary for 2 minutes instead.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class IsolationCanary
{
    private const ulong Va = 4 * MiB;
    private const int Pages = 32;
    private const byte Secret = 0x5E, Other = 0xC2, ChildSecret = 0x3C;

    /// <summary>Rounds of an ordinary run, per canary.</summary>
    private const int RawRounds = 600, AreaRounds = 400, DisposeRounds = 400;

    /// <summary>How long each canary runs in the soak.</summary>
    private static readonly TimeSpan SoakTime = TimeSpan.FromMinutes(2);

    /// <summary>The safety net of an ordinary run's rounds (they take a few seconds).</summary>
    private static readonly TimeSpan RoundsBudget = TimeSpan.FromSeconds(120);

    /// <summary>Whether another round is due: a fixed count, or in the soak until its time is over.</summary>
    private static bool MoreRounds(int rounds, int wanted, LoopBudget budget)
    {
        if (Soak) return budget.Elapsed < SoakTime;
        budget.Check($"{rounds} of {wanted} rounds");
        return rounds < wanted;
    }

    private static LoopBudget NewBudget(string what) => new(what, Soak ? SoakTime + RoundsBudget : RoundsBudget);

    /// <summary>A thread that reads <c>[Va, Va + Pages)</c> of its space in a loop and checks every byte it got.</summary>
    private sealed class Watcher
    {
        private readonly Thread _thread;
        private volatile bool _stop;
        private readonly Func<VmSpace> _space;
        private readonly byte[] _allowed;

        private readonly int _seed;
        private readonly byte? _marker;

        public long Reads, Faulted, Saw, SawMarker, Violations;
        public string? FirstViolation;
        public Exception? Error;

        /// <summary>A watcher of <paramref name="space"/>; <paramref name="marker"/>, if given, is a byte whose sightings are counted (<see cref="SawMarker"/>).</summary>
        public Watcher(string name, int seed, Func<VmSpace> space, byte? marker, params byte[] allowed)
        {
            _space = space;
            _allowed = allowed;
            _seed = seed;
            _marker = marker;
            _thread = Deadlines.Background(name, Loop);
            _thread.Start();
        }

        public string Name => _thread.Name!;

        private void Loop()
        {
            var buf = new byte[Pages * (int)Page];
            var rng = new Random(_seed);
            try
            {
                while (!_stop)
                {
                    VmSpace space = _space();
                    if (space.IsDisposed) continue;
                    // Whole range, or one page at a time from a random place.
                    int first = rng.Next(2) == 0 ? 0 : rng.Next(Pages);
                    int len = first == 0 ? buf.Length : (int)Page;
                    CopyResult r;
                    try
                    {
                        space.Activate();
                        r = Read(space, Va + (ulong)first * Page, buf.AsSpan(0, len));
                    }
                    catch (ObjectDisposedException)
                    {
                        continue; // disposed between the check and Activate or the read
                    }
                    catch (UVmException e) when (e.Error == UVmError.AccessDenied && space.IsDisposed)
                    {
                        continue; // disposed between Activate and the read: no longer the active space
                    }
                    Interlocked.Increment(ref Reads);
                    if (!r.IsOk) Interlocked.Increment(ref Faulted);
                    if (r.Bytes > 0) Interlocked.Increment(ref Saw);
                    Span<byte> got = buf.AsSpan(0, (int)r.Bytes);
                    if (_marker is byte m && got.Contains(m)) Interlocked.Increment(ref SawMarker);
                    int bad = _allowed.Length == 1 ? got.IndexOfAnyExcept(_allowed[0]) : got.IndexOfAnyExcept(_allowed);
                    if (bad >= 0)
                    {
                        Interlocked.Increment(ref Violations);
                        FirstViolation ??= $"{_thread.Name} read 0x{got[bad]:x2} at 0x{Va + (ulong)first * Page + (ulong)bad:x}";
                    }
                }
            }
            catch (Exception e)
            {
                Error = e;
            }
        }

        public void Stop()
        {
            _stop = true;
            Deadlines.Join(_thread, $"{_thread.Name} to stop");
            if (Error != null) Assert.Fail($"{_thread.Name} failed: {Error}");
        }
    }

    private static void Fill(UFrame f, byte value)
    {
        VmWriter<Infallible> w = f.Writer();
        var page = new byte[Page];
        page.AsSpan().Fill(value);
        w.Write(page);
    }

    /// <summary>Maps fresh frames filled with <paramref name="value"/> over the range; returns their Paddrs.</summary>
    private static HashSet<ulong> MapFresh(VmSpace space, byte value, PageFlags flags = PageFlags.RW)
    {
        var paddrs = new HashSet<ulong>();
        using CursorMut c = space.CursorMut(VaddrRange.FromLength(Va, Pages * Page));
        for (int i = 0; i < Pages; i++)
        {
            using UFrame f = space.Pool.AllocFrame();
            Fill(f, value);
            paddrs.Add(f.Paddr);
            c.Map(f, PageProperty.New(flags));
        }
        return paddrs;
    }

    /// <summary>Counts, for each watcher, the rounds during which it completed at least one read: the rounds it raced.</summary>
    private sealed class RaceCount
    {
        private readonly Watcher[] _watchers;
        private readonly long[] _readsAtStart;
        public readonly int[] Rounds;

        public RaceCount(params Watcher[] watchers)
        {
            _watchers = watchers;
            _readsAtStart = new long[watchers.Length];
            Rounds = new int[watchers.Length];
        }

        public void BeginRound()
        {
            for (int i = 0; i < _watchers.Length; i++) _readsAtStart[i] = Interlocked.Read(ref _watchers[i].Reads);
        }

        public void EndRound()
        {
            for (int i = 0; i < _watchers.Length; i++)
                if (Interlocked.Read(ref _watchers[i].Reads) > _readsAtStart[i]) Rounds[i]++;
        }
    }

    private static void Report(string what, int rounds, long reuses, int roundsWithReuse, RaceCount raced, params Watcher[] watchers)
    {
        long reads = watchers.Sum(w => w.Reads), faulted = watchers.Sum(w => w.Faulted), saw = watchers.Sum(w => w.Saw), bad = watchers.Sum(w => w.Violations);
        Figures.Add($"canary ({what}) rounds", rounds);
        Figures.Add($"canary ({what}) frames reused across spaces", reuses);
        Figures.Add($"canary ({what}) rounds that reused the other space's frames", roundsWithReuse);
        Figures.Add($"canary ({what}) racing reads", reads);
        Figures.Add($"canary ({what}) racing reads that faulted", faulted);
        Figures.Add($"canary ({what}) racing reads that returned data", saw);
        Figures.Add($"canary ({what}) reads of the other space's or freed data", bad);
        for (int i = 0; i < watchers.Length; i++) Figures.Add($"canary ({what}) rounds raced by the {watchers[i].Name}", raced.Rounds[i]);
        string? first = watchers.Select(w => w.FirstViolation).FirstOrDefault(v => v != null);
        Assert.That(bad, Is.Zero, $"isolation broken: {first}");
        // Preconditions, by counts: without them the canary proved nothing.
        Assert.That(rounds, Is.GreaterThan(50));
        Assert.That(reuses, Is.GreaterThan(0), "no frame of one space was ever reused by the other: the canary proved nothing");
        Assert.That(roundsWithReuse, Is.GreaterThanOrEqualTo(rounds / 2), $"only {roundsWithReuse} of {rounds} rounds handed one space's frames to the other");
        Assert.That(saw, Is.GreaterThan(0), "the watchers never saw their own data: the canary proved nothing");
        Assert.That(watchers[0].Saw, Is.GreaterThan(0), $"the {watchers[0].Name} never read the secret");
        Assert.That(watchers[0].Faulted, Is.GreaterThan(0), $"the {watchers[0].Name} never read across a loss of the frames (no read ever faulted)");
        for (int i = 0; i < watchers.Length; i++)
            Assert.That(raced.Rounds[i], Is.GreaterThanOrEqualTo(rounds / MinRacedFraction),
                $"the {watchers[i].Name} read during only {raced.Rounds[i]} of {rounds} rounds: it hardly raced them");
    }

    /// <summary>Each watcher must have read during at least 1 round in this many.</summary>
    private const int MinRacedFraction = 10;

    [Test, CancelAfter(180_000)]
    public void Frames_freed_under_a_racing_reader_never_show_another_spaces_data()
    {
        int seed = Seed("canary");
        using var pool = new FramePool(2 * MiB);
        var a = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
        var b = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
        var inA = new Watcher("watcher of A", seed, () => a, null, Secret);
        var inB = new Watcher("watcher of B", seed + 1, () => b, null, Other);
        var raced = new RaceCount(inA, inB);
        int rounds = 0, roundsWithReuse = 0;
        long reuses = 0;
        LoopBudget budget = NewBudget("raw canary");
        try
        {
            HashSet<ulong> ofA = new(), ofB = new();
            while (MoreRounds(rounds, RawRounds, budget))
            {
                raced.BeginRound();
                // A gets the secret, then loses it: unmapped, replaced by other frames, or revoked then unmapped.
                HashSet<ulong> freshA = MapFresh(a, Secret);
                int reused = freshA.Count(ofB.Contains);
                ofA = freshA;
                Thread.SpinWait(2000);
                switch (rounds % 3)
                {
                    case 0:
                        Unmap(a, Va, Pages * Page);
                        break;
                    case 1:
                        ofA.UnionWith(MapFresh(a, Secret, PageFlags.R)); // the old frames are freed after this flush
                        Unmap(a, Va, Pages * Page);
                        break;
                    default:
                        using (CursorMut c = a.CursorMut(VaddrRange.FromLength(Va, Pages * Page)))
                        {
                            while (c.ProtectNext(Va + Pages * Page - c.VirtAddr, (ref PageFlags f, ref CachePolicy _) => f &= ~PageFlags.RWX) is not null)
                            {
                            }
                        }
                        Unmap(a, Va, Pages * Page);
                        break;
                }
                pool.Trim(); // A's frames are allocatable right now
                Unmap(b, Va, Pages * Page);
                HashSet<ulong> freshB = MapFresh(b, Other);
                reused += freshB.Count(ofA.Contains);
                ofB = freshB;
                Thread.SpinWait(2000);
                Unmap(b, Va, Pages * Page);
                pool.Trim();
                raced.EndRound();
                reuses += reused;
                if (reused > 0) roundsWithReuse++;
                rounds++;
            }
        }
        finally
        {
            inA.Stop();
            inB.Stop();
        }
        CheckHostMirrors(new[] { a, b });
        a.Dispose();
        b.Dispose();
        Assert.That(pool.FramesInUse, Is.Zero, "frames leaked");
        Report("raw cursors", rounds, reuses, roundsWithReuse, raced, inA, inB);
    }

    [Test, CancelAfter(180_000)]
    public void Areas_unmapped_and_forked_under_racing_readers_never_show_another_spaces_data()
    {
        int seed = Seed("canary");
        // Roomy enough that chunk reservations never starve a fault (see Exhaustion), small enough to recycle chunks.
        using var pool = new FramePool(32 * MiB);
        var a = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
        var b = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
        AddressSpace? child = null;
        // Demand-zero pages read as zero until written, so zero is allowed; the other patterns never.
        var inA = new Watcher("watcher of A", seed, () => a.Space, null, 0, Secret);
        var inB = new Watcher("watcher of B", seed + 1, () => b.Space, null, 0, Other);
        var inChild = new Watcher("watcher of A's child", seed + 2, () => child?.Space ?? a.Space, ChildSecret, 0, Secret, ChildSecret);
        var raced = new RaceCount(inA, inB, inChild);
        int rounds = 0, roundsWithReuse = 0, forks = 0;
        long reuses = 0;
        var page = new byte[Pages * (int)Page];
        var everOfA = new HashSet<ulong>(); // frames that ever held A's secret
        LoopBudget budget = NewBudget("areas canary");
        try
        {
            while (MoreRounds(rounds, AreaRounds, budget))
            {
                raced.BeginRound();
                var opts = new VmMapOptions { Addr = Va, Flags = PageFlags.RW, CanOverwrite = true };
                a.Map(Pages * Page, new AreaBackend.Alloc(rounds % 2 == 0), opts);
                a.Space.Activate();
                Array.Fill(page, Secret);
                Assert.That(Write(a.Space, Va, page).IsOk);
                everOfA.UnionWith(MappedSlots(a.Space).Select(s => s.Paddr));

                // A child shares A's frames copy-on-write and overwrites its copy: A must never see it.
                if (rounds % 4 == 0)
                {
                    AddressSpace c = a.Fork();
                    Volatile.Write(ref child, c);
                    c.Space.Activate();
                    Array.Fill(page, ChildSecret);
                    Assert.That(Write(c.Space, Va, page.AsSpan(0, Pages / 2 * (int)Page)).IsOk);
                    Thread.SpinWait(2000);
                    Volatile.Write(ref child, null);
                    c.Dispose();
                    forks++;
                }

                Thread.SpinWait(2000);
                a.Unmap(VaddrRange.FromLength(Va, Huge)); // the whole 2 MiB region: its frame reservation goes back too
                pool.Trim();

                b.Map(Pages * Page, new AreaBackend.Alloc(true), opts);
                b.Space.Activate();
                Array.Fill(page, Other);
                Assert.That(Write(b.Space, Va, page).IsOk);
                int reused = MappedSlots(b.Space).Count(s => everOfA.Contains(s.Paddr));
                Thread.SpinWait(2000);
                b.Unmap(VaddrRange.FromLength(Va, Huge));
                pool.Trim();
                raced.EndRound();
                reuses += reused;
                if (reused > 0) roundsWithReuse++;
                rounds++;
            }
        }
        finally
        {
            inA.Stop();
            inB.Stop();
            inChild.Stop();
            VmSpace.Deactivate();
        }
        CheckHostMirrors(new[] { a.Space, b.Space });
        a.Dispose();
        b.Dispose();
        Assert.That(pool.FramesInUse, Is.Zero, "frames leaked");
        Figures.Add("canary (areas and fork) forks", forks);
        Figures.Add("canary (areas and fork) reads of a child's copy by its watcher", inChild.SawMarker);
        Report("areas and fork", rounds, reuses, roundsWithReuse, raced, inA, inB, inChild);
        Assert.That(inChild.SawMarker, Is.GreaterThan(0), "the child's watcher never read a child's own copy: the fork part proved nothing");
    }

    /// <summary>
    /// A space is disposed while a thread of it copies in a loop through one reader made before
    /// (a copy of the same reader struct each time), and the next space, reserved at once, most
    /// often lands on the same host addresses and writes its own pattern there. The stale reader
    /// must fault, never read the next space's bytes: Dispose waits for accesses in progress, and
    /// later ones find the space closed before they touch the host range.
    /// </summary>
    [Test, CancelAfter(180_000)]
    public void A_space_disposed_under_a_racing_reader_never_shows_the_next_spaces_data()
    {
        using var pool = new FramePool(2 * MiB);
        int rounds = 0, arenaReused = 0, roundsReadBefore = 0;
        long reads = 0, saw = 0, staleReads = 0, staleWithData = 0, violations = 0;
        string? first = null;
        LoopBudget budget = NewBudget("dispose canary");
        while (MoreRounds(rounds, DisposeRounds, budget) || rounds < 60)
        {
            var a = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
            MapFresh(a, Secret);
            nint oldBase = a.HostBase;
            using var ready = new ManualResetEventSlim();
            bool disposed = false;
            long readsBefore = 0; // reads of this round that returned data and ended before Dispose began
            var watcher = TestThread.Start("stale reader", () =>
            {
                a.Activate();
                VmReader<Fallible> made = a.Reader(Va, Pages * Page);
                var buf = new byte[Pages * (int)Page];
                ready.Set();
                // Keep reading through the old reader until it has faulted a few times after Dispose.
                for (int faultsAfter = 0; faultsAfter < 3 && Interlocked.Read(ref violations) == 0;)
                {
                    bool after = Volatile.Read(ref disposed);
                    VmReader<Fallible> r = made;
                    Array.Clear(buf);
                    CopyResult res = r.ReadFallible(buf);
                    Interlocked.Increment(ref reads);
                    if (res.Bytes > 0) Interlocked.Increment(ref saw);
                    if (after)
                    {
                        Interlocked.Increment(ref staleReads);
                        if (res.Bytes > 0) Interlocked.Increment(ref staleWithData);
                        if (!res.IsOk) faultsAfter++;
                    }
                    else if (res.IsOk)
                    {
                        Interlocked.Increment(ref readsBefore);
                    }
                    int bad = buf.AsSpan(0, (int)res.Bytes).IndexOfAnyExcept(Secret);
                    if (bad >= 0 && Interlocked.Increment(ref violations) == 1)
                        first = $"read 0x{buf[bad]:x2} at +0x{bad:x} after {(after ? "" : "(maybe) ")}Dispose";
                }
            });
            Deadlines.Wait(ready, "the stale reader to make its reader");
            Thread.SpinWait(1000 * (rounds % 8));
            long completeBefore = Interlocked.Read(ref readsBefore);
            a.Dispose();
            Volatile.Write(ref disposed, true);
            if (completeBefore > 0) roundsReadBefore++;
            pool.Trim(); // A's frames are allocatable right now
            using (var b = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool }))
            {
                if (b.HostBase == oldBase) arenaReused++;
                MapFresh(b, Other);
                watcher.Join(what: "the stale reader to fault after Dispose");
            }
            rounds++;
        }
        Assert.That(pool.FramesInUse, Is.Zero, "frames leaked");
        Figures.Add("canary (dispose) rounds", rounds);
        Figures.Add("canary (dispose) next space at the same host address", arenaReused);
        Figures.Add("canary (dispose) racing reads", reads);
        Figures.Add("canary (dispose) rounds whose reader read the secret before Dispose", roundsReadBefore);
        Figures.Add("canary (dispose) reads of the next space's data", violations);
        Assert.That(violations, Is.Zero, $"isolation broken: {first}");
        Assert.That(staleWithData, Is.Zero, "a read begun after Dispose returned data");
        // Preconditions, by counts: without them the canary proved nothing.
        Assert.That(arenaReused, Is.GreaterThan(0), "the next space never took the old host addresses: the canary proved nothing");
        Assert.That(arenaReused, Is.GreaterThanOrEqualTo(rounds / 2), $"the next space took the old host addresses in only {arenaReused} of {rounds} rounds");
        Assert.That(saw, Is.GreaterThan(0), "the reader never saw its own data: the canary proved nothing");
        Assert.That(staleReads, Is.GreaterThanOrEqualTo(3L * rounds), "the stale reader did not read after every Dispose");
        Assert.That(roundsReadBefore, Is.GreaterThanOrEqualTo(rounds / MinRacedFraction),
            $"the reader had read the secret before Dispose in only {roundsReadBefore} of {rounds} rounds: Dispose hardly raced it");
    }
}
