using System.Diagnostics;
using NUnit.Framework;
using UVm.Areas;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using static UVm.Tests.Reliability.Harness;

namespace UVm.Tests.Reliability;

/// <summary>
/// Isolation canary: one space's frames hold a secret; they are unmapped (or replaced) and freed
/// while a thread of that space copies from the range in a loop, then reused at once by a second
/// space that writes its own pattern, watched by a thread of its own. Every read must either
/// fault or return its own space's bytes: never the other space's, never a freed frame's. The pool
/// is tiny and trimmed every round, so the freed frames really are the ones handed out next.
/// This is the deferred release at work: a frame leaves the host before it is freed.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class IsolationCanary
{
    private const ulong Va = 4 * MiB;
    private const int Pages = 32;
    private const byte Secret = 0x5E, Other = 0xC2, ChildSecret = 0x3C;

    private static TimeSpan Budget => Soak ? TimeSpan.FromMinutes(2) : TimeSpan.FromSeconds(6);

    /// <summary>A thread that reads <c>[Va, Va + Pages)</c> of its space in a loop and checks every byte it got.</summary>
    private sealed class Watcher
    {
        private readonly Thread _thread;
        private volatile bool _stop;
        private readonly Func<VmSpace> _space;
        private readonly byte[] _allowed;

        public long Reads, Faulted, Saw, Violations;
        public string? FirstViolation;
        public Exception? Error;

        public Watcher(string name, Func<VmSpace> space, params byte[] allowed)
        {
            _space = space;
            _allowed = allowed;
            _thread = new Thread(Loop) { IsBackground = true, Name = name };
            _thread.Start();
        }

        private void Loop()
        {
            var buf = new byte[Pages * (int)Page];
            var rng = new Random(Environment.CurrentManagedThreadId);
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
            Assert.That(_thread.Join(TimeSpan.FromSeconds(30)), Is.True, $"{_thread.Name} did not stop");
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

    private static void Report(string what, int rounds, long reuses, params Watcher[] watchers)
    {
        long reads = watchers.Sum(w => w.Reads), faulted = watchers.Sum(w => w.Faulted), saw = watchers.Sum(w => w.Saw), bad = watchers.Sum(w => w.Violations);
        Figures.Add($"canary ({what}) rounds", rounds);
        Figures.Add($"canary ({what}) frames reused across spaces", reuses);
        Figures.Add($"canary ({what}) racing reads", reads);
        Figures.Add($"canary ({what}) racing reads that faulted", faulted);
        Figures.Add($"canary ({what}) racing reads that returned data", saw);
        Figures.Add($"canary ({what}) reads of the other space's or freed data", bad);
        string? first = watchers.Select(w => w.FirstViolation).FirstOrDefault(v => v != null);
        Assert.That(bad, Is.Zero, $"isolation broken: {first}");
        Assert.That(rounds, Is.GreaterThan(50));
        Assert.That(reuses, Is.GreaterThan(0), "no frame of one space was ever reused by the other: the canary proved nothing");
        Assert.That(saw, Is.GreaterThan(0), "the watchers never saw their own data: the canary proved nothing");
    }

    [Test, CancelAfter(180_000)]
    public void Frames_freed_under_a_racing_reader_never_show_another_spaces_data()
    {
        using var pool = new FramePool(2 * MiB);
        var a = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
        var b = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
        var inA = new Watcher("watcher of A", () => a, Secret);
        var inB = new Watcher("watcher of B", () => b, Other);
        int rounds = 0;
        long reuses = 0;
        var sw = Stopwatch.StartNew();
        try
        {
            HashSet<ulong> ofA = new(), ofB = new();
            while (sw.Elapsed < Budget)
            {
                // A gets the secret, then loses it: unmapped, replaced by other frames, or revoked then unmapped.
                HashSet<ulong> freshA = MapFresh(a, Secret);
                reuses += freshA.Count(ofB.Contains);
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
                reuses += freshB.Count(ofA.Contains);
                ofB = freshB;
                Thread.SpinWait(2000);
                Unmap(b, Va, Pages * Page);
                pool.Trim();
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
        Report("raw cursors", rounds, reuses, inA, inB);
    }

    [Test, CancelAfter(180_000)]
    public void Areas_unmapped_and_forked_under_racing_readers_never_show_another_spaces_data()
    {
        // Roomy enough that chunk reservations never starve a fault (see Exhaustion), small enough to recycle chunks.
        using var pool = new FramePool(32 * MiB);
        var a = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
        var b = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
        AddressSpace? child = null;
        // Demand-zero pages read as zero until written, so zero is allowed; the other patterns never.
        var inA = new Watcher("watcher of A", () => a.Space, 0, Secret);
        var inB = new Watcher("watcher of B", () => b.Space, 0, Other);
        var inChild = new Watcher("watcher of A's child", () => child?.Space ?? a.Space, 0, Secret, ChildSecret);
        int rounds = 0;
        long reuses = 0;
        var page = new byte[Pages * (int)Page];
        var everOfA = new HashSet<ulong>(); // frames that ever held A's secret
        var sw = Stopwatch.StartNew();
        try
        {
            while (sw.Elapsed < Budget)
            {
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
                }

                Thread.SpinWait(2000);
                a.Unmap(VaddrRange.FromLength(Va, Huge)); // the whole 2 MiB region: its frame reservation goes back too
                pool.Trim();

                b.Map(Pages * Page, new AreaBackend.Alloc(true), opts);
                b.Space.Activate();
                Array.Fill(page, Other);
                Assert.That(Write(b.Space, Va, page).IsOk);
                reuses += MappedSlots(b.Space).Count(s => everOfA.Contains(s.Paddr));
                Thread.SpinWait(2000);
                b.Unmap(VaddrRange.FromLength(Va, Huge));
                pool.Trim();
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
        Report("areas and fork", rounds, reuses, inA, inB, inChild);
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
        int rounds = 0, arenaReused = 0;
        long reads = 0, saw = 0, staleReads = 0, staleWithData = 0, violations = 0;
        string? first = null;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < Budget || rounds < 60)
        {
            var a = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
            MapFresh(a, Secret);
            nint oldBase = a.HostBase;
            using var ready = new ManualResetEventSlim();
            bool disposed = false;
            var watcher = new Thread(() =>
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
                    int bad = buf.AsSpan(0, (int)res.Bytes).IndexOfAnyExcept(Secret);
                    if (bad >= 0 && Interlocked.Increment(ref violations) == 1)
                        first = $"read 0x{buf[bad]:x2} at +0x{bad:x} after {(after ? "" : "(maybe) ")}Dispose";
                }
            }) { IsBackground = true, Name = "stale reader" };
            watcher.Start();
            Assert.That(ready.Wait(30_000), Is.True);
            Thread.SpinWait(1000 * (rounds % 8));
            a.Dispose();
            Volatile.Write(ref disposed, true);
            pool.Trim(); // A's frames are allocatable right now
            using (var b = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool }))
            {
                if (b.HostBase == oldBase) arenaReused++;
                MapFresh(b, Other);
                Assert.That(watcher.Join(30_000), Is.True, "the stale reader never faulted");
            }
            rounds++;
        }
        Assert.That(pool.FramesInUse, Is.Zero, "frames leaked");
        Figures.Add("canary (dispose) rounds", rounds);
        Figures.Add("canary (dispose) next space at the same host address", arenaReused);
        Figures.Add("canary (dispose) racing reads", reads);
        Figures.Add("canary (dispose) reads of the next space's data", violations);
        Assert.That(violations, Is.Zero, $"isolation broken: {first}");
        Assert.That(staleWithData, Is.Zero, "a read begun after Dispose returned data");
        Assert.That(arenaReused, Is.GreaterThan(0), "the next space never took the old host addresses: the canary proved nothing");
        Assert.That(saw, Is.GreaterThan(0), "the reader never saw its own data: the canary proved nothing");
    }
}
