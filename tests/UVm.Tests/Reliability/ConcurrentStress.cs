using System.Diagnostics;
using System.Text;
using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.TestSupport;
using static UVm.Tests.Reliability.Harness;

namespace UVm.Tests.Reliability;

/// <summary>
/// Concurrent stress: threads mixing map / unmap / protect / copies (with demand-zero and
/// copy-on-write faults) / fork / raw cursor work on overlapping and disjoint ranges of one
/// address space until every thread has done its share of operations (a fixed count each; the
/// threads that are done first keep going, so all of them overlap to the end), watched by a
/// watchdog that fails (and says what every thread was doing) when a thread stops making
/// progress. Every word written holds its own guest address and the writer's tag, so a read that
/// returns anything else is data from the wrong place.
/// Afterwards: the host mirrors the page table, reference counts match the mappings, and once
/// everything is disposed the private pool holds no frame.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class ConcurrentStress
{
    private const ulong SpaceSize = 64 * MiB;
    private const ulong SharedStart = 0, SharedEnd = 4 * MiB;      // every area thread maps here (overlapping)
    private const ulong OwnStart = 8 * MiB;                          // area thread i also owns [8 + 2i, 10 + 2i) MiB
    private const ulong RawStart = 32 * MiB, RawEnd = 34 * MiB;      // raw cursor mappings, outside every area
    private const byte RawTag = 0xD0, ChildTag = 0xAF;

    /// <summary>Operations each thread must have done before the run ends, by role (an ordinary run takes a few seconds).</summary>
    private const long AreaOps = 8_000, ForkOps = 250, RawOps = 8_000, ReaderOps = 6_000;

    /// <summary>How long the soak (<c>UVM_SOAK=1</c>) runs, whatever the counts.</summary>
    private static readonly TimeSpan SoakTime = TimeSpan.FromMinutes(3);

    /// <summary>The safety net of an ordinary run: the counts not reached by then fail the test.</summary>
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(150);

    private static readonly TimeSpan Stall = TimeSpan.FromSeconds(20);

    private static ulong Word(ulong va, byte tag) => (va << 8) | tag;

    /// <summary>Strict check of an atomically read word: zero, or this address with a writer's tag.</summary>
    private static bool ValidWord(ulong va, ulong w) => w == 0 || ((w >> 8) == va && ((w & 0xFF) is >= 0xA0 and <= 0xAF or RawTag));

    /// <summary>Tear-tolerant check of a word read by a bulk copy: each byte is zero or the byte a valid word has there.</summary>
    private static bool PlausibleWord(ulong va, ulong w)
    {
        ulong want = va << 8;
        for (int i = 1; i < 8; i++)
        {
            ulong b = (w >> (8 * i)) & 0xFF;
            if (b != 0 && b != ((want >> (8 * i)) & 0xFF)) return false;
        }
        ulong tag = w & 0xFF;
        return tag == 0 || tag is >= 0xA0 and <= 0xAF || tag == RawTag;
    }

    /// <summary>What one worker is doing: read by the watchdog.</summary>
    private sealed class Worker
    {
        public required string Name;
        public required long Target; // operations it must have done before the run may end
        public long Progress;
        public volatile string Doing = "starting";
        public Thread? Thread;
        public Exception? Error;
        public long Ops;
        public int Tid; // the Linux thread id, to find the thread in the native stacks of a dump
    }

    [System.Runtime.InteropServices.DllImport("libc.so.6", EntryPoint = "gettid")]
    private static extern int GetTid();

    private sealed class Stress
    {
        public readonly FramePool Pool = new(512 * MiB);
        public readonly AddressSpace Areas;
        public readonly List<Worker> Workers = new();
        public volatile bool Stop;
        public long BadWords, ChildFaults;
        public long WordsChecked, WrittenWordsChecked, LoadsChecked; // what the reads really checked
        private readonly int _seed;

        public Stress(int seed)
        {
            _seed = seed;
            Areas = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = Pool });
        }

        public void Spawn(string name, long target, Action<Worker, Random> body)
        {
            var w = new Worker { Name = name, Target = target };
            var rng = new Random(_seed ^ StableHash(name));
            w.Thread = Deadlines.Background(name, () =>
            {
                w.Tid = GetTid();
                try
                {
                    while (!Stop)
                    {
                        body(w, rng);
                        w.Ops++;
                        Interlocked.Increment(ref w.Progress);
                    }
                    w.Doing = "finished";
                }
                catch (Exception e)
                {
                    w.Error = e;
                    w.Doing = "failed: " + e.GetType().Name;
                    Stop = true;
                }
            });
            Workers.Add(w);
        }

        /// <summary>A hash of a worker's name that is the same in every process (string.GetHashCode is not), so a seed replays.</summary>
        private static int StableHash(string name)
        {
            int h = 17;
            foreach (char c in name) h = unchecked(h * 31 + c);
            return h;
        }

        /// <summary>Reads <paramref name="len"/> bytes at <paramref name="va"/> and checks every word it got.</summary>
        public void ReadAndCheck(VmSpace space, ulong va, int len, Worker w, Random rng)
        {
            var buf = new byte[len];
            CopyResult r = Read(space, va, buf);
            long words = 0, written = 0;
            for (int i = 0; i + 8 <= (int)r.Bytes; i += 8)
            {
                ulong word = BitConverter.ToUInt64(buf, i);
                words++;
                if (word != 0) written++;
                if (!PlausibleWord(va + (ulong)i, word))
                {
                    Interlocked.Increment(ref BadWords);
                    throw new AssertionException($"{w.Name}: bulk read at 0x{va + (ulong)i:x} returned 0x{word:x16}: another place's data");
                }
            }
            Interlocked.Add(ref WordsChecked, words);
            Interlocked.Add(ref WrittenWordsChecked, written);
            // Sample words with single atomic loads: these must be exact.
            for (int k = 0; k < 8 && r.Bytes >= 8; k++)
            {
                ulong a = va + (ulong)rng.Next(0, (int)(r.Bytes / 8)) * 8;
                VmReader<Fallible> one = space.Reader(a, 8);
                IoResult<ulong> v = one.ReadVal<ulong>();
                if (v.IsOk && !ValidWord(a, v.Value))
                {
                    Interlocked.Increment(ref BadWords);
                    throw new AssertionException($"{w.Name}: load at 0x{a:x} returned 0x{v.Value:x16}: another place's data");
                }
                if (v.IsOk) Interlocked.Increment(ref LoadsChecked);
            }
        }

        /// <summary>Writes this writer's words over <c>[va, va + len)</c> (8-byte stores), stopping at the first fault.</summary>
        public static void WriteWords(VmSpace space, ulong va, int words, byte tag)
        {
            VmWriter<Fallible> wr = space.Writer(va, (ulong)words * 8);
            for (int i = 0; i < words; i++)
                if (!wr.WriteVal(Word(va + (ulong)i * 8, tag)).IsOk) return;
        }
    }

    private static ulong RandomPage(Random rng, ulong start, ulong end, ulong pages) =>
        start + (ulong)rng.NextInt64(0, (long)((end - start) / Page - pages + 1)) * Page;

    private static void AreaWorker(Stress s, int index, Worker w, Random rng)
    {
        VmSpace space = s.Areas.Space;
        space.Activate();
        byte tag = (byte)(0xA0 + index);
        bool shared = rng.Next(2) == 0;
        ulong lo = shared ? SharedStart + Page : OwnStart + (ulong)index * 2 * MiB;
        ulong hi = shared ? SharedEnd : lo + 2 * MiB;
        ulong pages = (ulong)rng.Next(1, 33);
        ulong va = RandomPage(rng, lo, hi, pages);
        var range = VaddrRange.FromLength(va, pages * Page);
        switch (rng.Next(8))
        {
            case 0:
                w.Doing = $"Map {range} fixed, overwriting";
                s.Areas.Map(range.Length, new AreaBackend.Alloc(rng.Next(4) == 0),
                    new VmMapOptions { Addr = va, CanOverwrite = true, Flags = rng.Next(4) == 0 ? PageFlags.R : PageFlags.RW });
                break;
            case 1:
                w.Doing = $"Unmap {range}";
                s.Areas.Unmap(range);
                break;
            case 2:
                w.Doing = $"Protect {range}";
                s.Areas.Protect(range, rng.Next(3) == 0 ? PageFlags.R : PageFlags.RW);
                break;
            case 3:
            case 4:
                w.Doing = $"write words over {range}";
                Stress.WriteWords(space, va + (ulong)rng.Next(0, 64) * 8, (int)Math.Min(pages * Page / 8 - 64, 1024), tag);
                break;
            default:
                w.Doing = $"read {range}";
                s.ReadAndCheck(space, va, (int)Math.Min(range.Length, 4 * Page), w, rng);
                break;
        }
    }

    private static void ForkWorker(Stress s, Worker w, Random rng)
    {
        w.Doing = "Fork";
        using AddressSpace child = s.Areas.Fork();
        child.Space.Activate();
        for (int i = 0; i < 8 && !s.Stop; i++)
        {
            ulong va = RandomPage(rng, SharedStart + Page, SharedEnd, 4);
            w.Doing = $"child: write words at 0x{va:x} (copy-on-write)";
            Stress.WriteWords(child.Space, va, 512, ChildTag);
            w.Doing = $"child: read 0x{va:x}";
            s.ReadAndCheck(child.Space, va, (int)(4 * Page), w, rng);
            ulong rawVa = RandomPage(rng, RawStart, RawEnd, 2);
            w.Doing = $"child: read raw 0x{rawVa:x}";
            s.ReadAndCheck(child.Space, rawVa, (int)(2 * Page), w, rng);
        }
        w.Doing = "child: check host mirror";
        Assert.That(MirrorDiffs(child.Space), Is.Empty, "a forked child's host does not mirror its page table");
        Interlocked.Add(ref s.ChildFaults, child.Space.SpuriousFaults + child.Space.HandledFaults + child.Space.UnresolvedFaults);
        w.Doing = "child: Dispose";
    }

    private static void RawWorker(Stress s, Worker w, Random rng)
    {
        VmSpace space = s.Areas.Space;
        space.Activate();
        ulong pages = (ulong)rng.Next(1, 9);
        ulong va = RandomPage(rng, RawStart, RawEnd, pages);
        var range = VaddrRange.FromLength(va, pages * Page);
        switch (rng.Next(6))
        {
            case 0:
                w.Doing = $"raw Map {range}";
                using (CursorMut c = space.CursorMut(range))
                {
                    for (ulong i = 0; i < pages; i++)
                    {
                        using UFrame f = s.Pool.AllocFrame();
                        VmWriter<Infallible> fw = f.Writer();
                        for (ulong k = 0; k < Page / 8; k++) fw.WriteVal(Word(va + i * Page + k * 8, RawTag));
                        c.Map(f, PageProperty.New(rng.Next(3) == 0 ? PageFlags.R : PageFlags.RW));
                    }
                }
                break;
            case 1:
                w.Doing = $"raw Unmap {range}";
                using (CursorMut c = space.CursorMut(range)) c.Unmap(range.Length);
                break;
            case 2:
                w.Doing = $"raw ProtectNext {range}";
                using (CursorMut c = space.CursorMut(range))
                {
                    PageFlags rights = rng.Next(2) == 0 ? PageFlags.R : PageFlags.RW;
                    while (c.VirtAddr < range.End && c.ProtectNext(range.End - c.VirtAddr, (ref PageFlags f, ref CachePolicy _) => f = (f & ~PageFlags.RWX) | rights) is not null)
                    {
                    }
                }
                break;
            case 3:
                // A fault while this thread holds a cursor must fail (not resolve, not deadlock).
                w.Doing = $"read an area page while holding a cursor on {range}";
                using (Cursor c = space.Cursor(range))
                {
                    ulong areaVa = RandomPage(rng, SharedStart + Page, SharedEnd, 1);
                    var buf = new byte[64];
                    CopyResult r = Read(space, areaVa, buf);
                    if (!r.IsOk && r.Error != UVmError.PageFault) throw new AssertionException($"unexpected error {r.Error}");
                }
                break;
            default:
                w.Doing = $"read raw {range}";
                s.ReadAndCheck(space, va, (int)range.Length, w, rng);
                break;
        }
    }

    private static void ReaderWorker(Stress s, Worker w, Random rng)
    {
        VmSpace space = s.Areas.Space;
        space.Activate();
        ulong va = rng.Next(3) == 0 ? RandomPage(rng, RawStart, RawEnd, 4) : RandomPage(rng, SharedStart, OwnStart + 4 * MiB, 4);
        w.Doing = $"read 0x{va:x} +4p";
        s.ReadAndCheck(space, va, (int)(4 * Page), w, rng);
        if (rng.Next(16) == 0)
        {
            w.Doing = $"HandlePageFault 0x{va:x}";
            space.HandlePageFault(va, rng.Next(2) == 0 ? PageFaultAccess.Read : PageFaultAccess.Write);
        }
    }

    [Test, CancelAfter(240_000)]
    public void Threads_mixing_every_operation_keep_the_space_consistent_and_leak_nothing()
    {
        int seed = Seed("stress");
        var s = new Stress(seed);
        for (int i = 0; i < 2; i++)
        {
            int index = i;
            s.Spawn($"areas-{i}", AreaOps, (w, rng) => AreaWorker(s, index, w, rng));
        }
        s.Spawn("forker", ForkOps, (w, rng) => ForkWorker(s, w, rng));
        s.Spawn("raw", RawOps, (w, rng) => RawWorker(s, w, rng));
        s.Spawn("reader-0", ReaderOps, (w, rng) => ReaderWorker(s, w, rng));
        s.Spawn("reader-1", ReaderOps, (w, rng) => ReaderWorker(s, w, rng));

        var sw = Stopwatch.StartNew();
        foreach (Worker w in s.Workers) w.Thread!.Start();
        string? deadlock = Watch(s, sw);
        s.Stop = true;
        if (deadlock == null)
        {
            foreach (Worker w in s.Workers)
                if (!w.Thread!.Join(Stall)) deadlock ??= Dump(s, $"{w.Name} did not stop within {Stall.TotalSeconds} s");
        }
        double seconds = sw.Elapsed.TotalSeconds;
        if (deadlock != null)
        {
            Figures.Note("stress: DEADLOCK " + deadlock);
            Assert.Fail($"seed {seed}: {deadlock}"); // the stuck threads are background threads; the pool is left to the process
        }
        foreach (Worker w in s.Workers)
            if (w.Error != null) Assert.Fail($"seed {seed}: {w.Name} failed while doing '{w.Doing}': {w.Error}");
        string shares = string.Join(", ", s.Workers.Select(w => $"{w.Name} {w.Ops:N0}/{w.Target:N0}"));
        if (!Soak)
        {
            // The run ends only once every thread has done its share, so all of them raced to the end.
            foreach (Worker w in s.Workers)
                Assert.That(w.Ops, Is.GreaterThanOrEqualTo(w.Target),
                    $"seed {seed}: {w.Name} did not do its share within the {Budget.TotalSeconds:0} s safety budget ({shares})");
        }

        // Quiescent: the invariants.
        VmSpace.Deactivate();
        Assert.That(MirrorDiffs(s.Areas.Space), Is.Empty, "after the stress the host does not mirror the page table");
        int frames = CheckReferenceCounts(s.Pool, new[] { s.Areas.Space });
        long faults = s.Areas.Space.SpuriousFaults + s.Areas.Space.HandledFaults + s.Areas.Space.UnresolvedFaults + s.ChildFaults;
        long ops = s.Workers.Sum(w => w.Ops);
        long forks = s.Workers.Single(w => w.Name == "forker").Ops;
        s.Areas.Dispose();
        long leaked = s.Pool.FramesInUse;
        Figures.Add("stress threads", s.Workers.Count);
        Figures.Add("stress thread-seconds", (long)Math.Round(s.Workers.Count * seconds));
        Figures.Add("stress operations", ops);
        Figures.Add("stress page faults taken", faults);
        Figures.Add("stress forks", forks);
        Figures.Add("stress wrong words read", s.BadWords);
        Figures.Add("stress words read and checked", s.WordsChecked);
        Figures.Add("stress leaked frames", leaked);
        Figures.Note($"stress: seed {seed}, {s.Workers.Count} threads × {seconds:F1} s, {ops:N0} operations ({shares}), {faults:N0} faults, {frames} frames mapped at the end, {leaked} leaked");
        Assert.That(leaked, Is.Zero, "frames leaked after the space was disposed");
        // Preconditions, by counts: the reads checked written words, and the stress took faults in the space and in forked children.
        Assert.That(s.WrittenWordsChecked, Is.GreaterThan(0), $"seed {seed}: no read ever returned a written word ({s.WordsChecked} words read): the checks proved nothing");
        Assert.That(s.LoadsChecked, Is.GreaterThan(0), $"seed {seed}: no sampled 8-byte load succeeded: the exact checks proved nothing");
        Assert.That(s.Areas.Space.SpuriousFaults + s.Areas.Space.HandledFaults, Is.GreaterThan(0), $"seed {seed}: no fault of the space was resolved: the stress proved little");
        Assert.That(s.ChildFaults, Is.GreaterThan(0), $"seed {seed}: the forked children never faulted (no copy-on-write): the stress proved little");
        s.Pool.Dispose();
    }

    /// <summary>
    /// Runs until every worker has done its share (in the soak: until its time is over); returns a
    /// dump if some thread stalls, or if the shares are not done within the safety budget.
    /// </summary>
    private static string? Watch(Stress s, Stopwatch sw)
    {
        var last = s.Workers.ToDictionary(w => w, w => (Progress: 0L, At: TimeSpan.Zero));
        CancellationToken cancelled = TestContext.CurrentContext.CancellationToken;
        while (!s.Stop && (Soak ? sw.Elapsed < SoakTime : s.Workers.Any(w => Interlocked.Read(ref w.Progress) < w.Target)))
        {
            if (!Soak && sw.Elapsed > Budget) return null; // the shares are checked (and fail) after the threads stop
            if (cancelled.IsCancellationRequested) return Dump(s, "the test's [CancelAfter] time ran out");
            Thread.Sleep(100);
            foreach (Worker w in s.Workers)
            {
                long p = Interlocked.Read(ref w.Progress);
                if (p != last[w].Progress) last[w] = (p, sw.Elapsed);
                else if (sw.Elapsed - last[w].At > Stall) return Dump(s, $"{w.Name} made no progress for {Stall.TotalSeconds} s");
            }
        }
        return null;
    }

    private static string Dump(Stress s, string why)
    {
        var sb = new StringBuilder($"deadlock suspected: {why}; what every thread was doing:\n");
        foreach (Worker w in s.Workers)
            sb.AppendLine($"  {w.Name,-10} tid={w.Tid,-7} ops={w.Ops,-8} alive={w.Thread!.IsAlive,-5} state={w.Thread.ThreadState,-14} doing: {w.Doing}");
        sb.Append(NativeStacks());
        return sb.ToString();
    }

    /// <summary>
    /// Every thread's native stack, from gdb attached to this process (LWP = the tids above; managed
    /// frames show as addresses, lock waits as futex/pthread frames), or why there is none.
    /// </summary>
    private static string NativeStacks()
    {
        try
        {
            var psi = new ProcessStartInfo("gdb", $"-p {Environment.ProcessId} -batch -nx -ex \"set pagination off\" -ex \"thread apply all bt 25\"")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            using Process gdb = Process.Start(psi)!;
            Task<string> output = gdb.StandardOutput.ReadToEndAsync();
            if (!gdb.WaitForExit(60_000) || !output.Wait(TimeSpan.FromSeconds(30)))
            {
                gdb.Kill(entireProcessTree: true);
                return "native stacks: gdb did not finish within 60 s\n";
            }
            return "native stacks (gdb):\n" + output.Result;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return $"native stacks: gdb unavailable ({e.Message})\n";
        }
    }
}
