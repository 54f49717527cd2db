using System.Runtime.CompilerServices;
using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Ecosystem;
using UVm.Tests.TestSupport;
using static UVm.Tests.Reliability.Harness;

namespace UVm.Tests.Reliability;

/// <summary>
/// UVm's SIGSEGV handler shares the process with the .NET runtime. The runtime must keep doing
/// what it does (null references become exceptions, stack overflows are reported, the GC moves
/// objects while guest faults are resolved, threads come and go), and UVm's objects must behave
/// when disposed twice, used after disposal, or dropped without disposal.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class LivingWithCoreClr
{
    private FramePool _pool = null!;

    [SetUp]
    public void CreatePool() => _pool = new FramePool(64 * MiB);

    [TearDown]
    public void CheckNothingLeaked()
    {
        VmSpace.Deactivate();
        long inUse = _pool.FramesInUse;
        if (inUse == 0) _pool.Dispose();
        Assert.That(inUse, Is.Zero, "frames leaked");
    }

    /// <summary>Makes sure UVm's handler is installed and has claimed at least one fault.</summary>
    private static void TakeAFault(VmSpace space)
    {
        space.Activate();
        CopyResult r = Read(space, space.Size - Page, new byte[8]);
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault), "a read of an unmapped page must fault");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int LengthOf(string? s) => s!.Length;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe int ReadNear0() => *(int*)16;

    [Test, CancelAfter(60_000)]
    public void Null_references_are_still_NullReferenceExceptions_between_guest_faults()
    {
        using var space = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        int caught = 0;
        for (int i = 0; i < 500; i++)
        {
            TakeAFault(space);
            Assert.Throws<NullReferenceException>(() => LengthOf(null));
            Assert.Throws<NullReferenceException>(() => ReadNear0());
            caught += 2;
        }
        // And on other threads, interleaved with faults of their own.
        TestThread.JoinAll(TestThread.StartAll(4, i => $"null dereferencer {i}", _ =>
        {
            for (int i = 0; i < 200; i++)
            {
                TakeAFault(space);
                try { LengthOf(null); }
                catch (NullReferenceException) { Interlocked.Increment(ref caught); }
            }
        }));
        Assert.That(caught, Is.EqualTo(1000 + 800));
        Figures.Add("CoreCLR: NullReferenceExceptions caught between faults", caught);
    }

    /// <summary>
    /// Full compacting collections, each one only once the workers have completed copies since the
    /// last (so every collection falls among faults being resolved), while 3 workers write pages
    /// through demand-zero faults and read them back into fresh managed arrays.
    /// </summary>
    [Test, CancelAfter(150_000)]
    public void The_GC_compacts_freely_while_faults_are_resolved_into_managed_buffers()
    {
        using var areas = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        const int pages = 64, collectionsWanted = 150;
        ulong va = areas.Map(pages * Page, new AreaBackend.Alloc(false), new VmMapOptions { Flags = PageFlags.RW });
        int seed = Seed("gc");
        var stop = new ManualResetEventSlim();
        Exception? error = null;
        long copies = 0;
        int collections = 0, gen2Before = GC.CollectionCount(2);
        bool workersStalled = false;
        long faultsBefore = 0;
        TimeSpan soakFor = TimeSpan.FromSeconds(60);
        var soakClock = System.Diagnostics.Stopwatch.StartNew();

        var gc = Deadlines.Background("gc", () =>
        {
            var junk = new List<byte[]>();
            long seen = 0;
            // Ordinary runs: a fixed number of collections. The soak (UVM_SOAK=1) keeps collecting for a minute.
            while (!stop.IsSet && (Soak ? soakClock.Elapsed < soakFor : collections < collectionsWanted))
            {
                for (int i = 0; i < 200; i++) junk.Add(new byte[1 + i * 37 % 9000]);
                if (junk.Count > 4000) junk.RemoveRange(0, 2000);
                if (!Deadlines.TryUntil(() => Interlocked.Read(ref copies) > seen || stop.IsSet))
                {
                    workersStalled = true;
                    break;
                }
                if (stop.IsSet) break;
                seen = Interlocked.Read(ref copies);
                GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
                collections++;
            }
        });

        var workers = Enumerable.Range(0, 3).Select(t => Deadlines.Background($"gc worker {t}", () =>
        {
            try
            {
                areas.Space.Activate();
                var rng = new Random(seed + t);
                while (!stop.IsSet)
                {
                    // Each worker owns a third of the pages: write a pattern through faults, read it back into fresh arrays.
                    int page = t + 3 * rng.Next(pages / 3);
                    ulong at = va + (ulong)page * Page;
                    byte fill = (byte)rng.Next(1, 256);
                    var data = new byte[Page];
                    Array.Fill(data, fill);
                    if (rng.Next(8) == 0) areas.Unmap(VaddrRange.FromLength(at, Page)); // a demand-zero fault next
                    if (rng.Next(8) == 0)
                        areas.Map(Page, new AreaBackend.Alloc(false), new VmMapOptions { Addr = at, CanOverwrite = true, Flags = PageFlags.RW });
                    CopyResult w = Write(areas.Space, at, data);
                    if (!w.IsOk) continue; // unmapped by this worker and not remapped: no area
                    var back = new byte[Page + (ulong)rng.Next(0, 64)]; // odd sizes, so the GC has something to move
                    CopyResult r = Read(areas.Space, at, back.AsSpan(0, (int)Page));
                    if (!r.IsOk || back.AsSpan(0, (int)Page).IndexOfAnyExcept(fill) >= 0)
                        throw new AssertionException($"page {page}: read back {r} with wrong bytes while the GC was compacting");
                    Interlocked.Increment(ref copies);
                }
            }
            catch (Exception e)
            {
                error ??= e;
                stop.Set();
            }
        })).ToList();

        faultsBefore = areas.Space.HandledFaults + areas.Space.SpuriousFaults;
        gc.Start();
        workers.ForEach(t => t.Start());
        try
        {
            Deadlines.Join(gc, $"the GC thread to finish its collections (seed {seed})", TimeSpan.FromSeconds(Soak ? 120 : 90));
        }
        finally
        {
            stop.Set();
            Deadlines.JoinAll(workers);
        }
        if (error != null) Assert.Fail($"seed {seed}: {error}");
        Assert.That(workersStalled, Is.False, $"seed {seed}: the workers completed no copy for a minute after {copies} copies");
        int gen2 = GC.CollectionCount(2) - gen2Before;
        long faults = areas.Space.HandledFaults + areas.Space.SpuriousFaults - faultsBefore;
        if (!Soak) Assert.That(collections, Is.EqualTo(collectionsWanted), "the GC thread stopped early");
        Assert.That(gen2, Is.GreaterThanOrEqualTo(collections), "full collections counted by the runtime");
        Assert.That(collections, Is.GreaterThan(10), "the GC hardly ran");
        Assert.That(copies, Is.GreaterThan(100));
        Assert.That(faults, Is.GreaterThan(0), "no fault was resolved under the GC: the test proved nothing");
        Assert.That(MirrorDiffs(areas.Space), Is.Empty);
        Figures.Add("CoreCLR: full compacting GCs under fault load", collections);
        Figures.Add("CoreCLR: checked copies under GC", copies);
        Figures.Add("CoreCLR: faults resolved under GC", faults);
    }

    [Test, CancelAfter(60_000)]
    public void Threads_come_and_go_while_spaces_live()
    {
        using var areas = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        const int threads = 64;
        ulong va = areas.Map(threads * Page, new AreaBackend.Alloc(false), new VmMapOptions { Flags = PageFlags.RW });
        areas.Space.Activate();
        for (int round = 0; round < 4; round++)
        {
            int r = round;
            TestThread.JoinAll(TestThread.StartAll(threads, i => $"short-lived {r}.{i}", i =>
            {
                // Activate, fault, hold and drop a cursor, then exit with the space still activated.
                areas.Space.Activate();
                ulong at = va + (ulong)i * Page;
                Assert.That(Write(areas.Space, at + (ulong)r, new[] { (byte)(i + 1) }).IsOk);
                using (Cursor c = areas.Space.Cursor(VaddrRange.FromLength(at, Page))) c.Query().Item?.Dispose();
            }));
        }
        Assert.That(VmSpace.Current, Is.SameAs(areas.Space), "other threads changed this thread's activation");
        var buf = new byte[4];
        for (int i = 0; i < threads; i++)
        {
            Assert.That(Read(areas.Space, va + (ulong)i * Page, buf).IsOk);
            Assert.That(buf, Is.EqualTo(Enumerable.Repeat((byte)(i + 1), 4).ToArray()), $"page {i}");
        }
        Assert.That(MirrorDiffs(areas.Space), Is.Empty);
        Figures.Add("CoreCLR: short-lived threads that faulted and exited", 4 * threads);
    }

    [Test, CancelAfter(60_000)]
    public void A_cursor_disposed_on_another_thread_leaves_both_threads_able_to_fault()
    {
        using var areas = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        ulong va = areas.Map(16 * Page, new AreaBackend.Alloc(false), new VmMapOptions { Flags = PageFlags.RW });
        Cursor? handedOver = null;
        using var created = new ManualResetEventSlim();
        using var disposed = new ManualResetEventSlim();
        CopyResult afterwards = default;
        var owner = TestThread.Start("cursor owner", () =>
        {
            areas.Space.Activate();
            handedOver = areas.Space.Cursor(VaddrRange.FromLength(va + 8 * Page, Page));
            created.Set();
            Assert.That(Deadlines.TryWait(disposed), Is.True, "the test thread never disposed the cursor");
            afterwards = Read(areas.Space, va, new byte[8]); // a demand-zero fault: must resolve
        });
        Deadlines.Wait(created, "the owner to create its cursor");
        handedOver!.Dispose(); // documented as allowed: the node locks are not tied to a thread
        disposed.Set();
        owner.Join();
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero, "the disposing thread's count of held cursors");
        Assert.That(afterwards.IsOk, Is.True, $"the creating thread can no longer resolve faults: {afterwards}");
    }

    [Test, CancelAfter(60_000)]
    public void A_handler_that_disposes_its_own_space_ends_the_copy_with_PageFault_at_the_exact_byte()
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        MapFilled(space, Va, 0x41); // page 0 mapped, page 1 not
        int calls = 0;
        Assert.That(space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo _) =>
        {
            calls++;
            s.Dispose(); // inside the copy's own access: must not wait for itself
            return true; // and claims success, which must not be believed
        }), Is.True);
        var buf = new byte[2 * Page];
        CopyResult r = default;
        OnOtherThread(() =>
        {
            // On a thread of its own: should Dispose wait for the copy it is called from, the test fails instead of hanging.
            space.Activate();
            r = Read(space, Va, buf);
        });
        Assert.That(calls, Is.EqualTo(1));
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Bytes, Is.EqualTo(Page), "the copy stops where the fault was");
        Assert.That(buf.AsSpan(0, (int)Page).IndexOfAnyExcept((byte)0x41), Is.EqualTo(-1));
        Assert.That(space.IsDisposed, Is.True);
        Assert.That(_pool.FramesInUse, Is.Zero, "the disposed space's frames were released");
    }

    [Test, CancelAfter(60_000)]
    public void Dispose_twice_is_harmless_for_every_disposable()
    {
        var areas = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        var space = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        UFrame frame = _pool.AllocFrame();
        USegment segment = _pool.AllocSegment(4);
        IoMem io = IoMem.CreateAnonymous(Page);
        CursorMut cm = space.CursorMut(VaddrRange.FromLength(Va, 2 * Page));
        cm.Map(frame, PageProperty.New(PageFlags.RW));
        cm.Dispose();
        Cursor c = space.Cursor(VaddrRange.FromLength(Va, Page));
        VmQueriedItem item = c.Query().Item!;
        c.Dispose();
        var disposables = new IDisposable[] { cm, c, item, frame, segment, io, space, areas };
        foreach (IDisposable d in disposables) d.Dispose();
        foreach (IDisposable d in disposables) Assert.DoesNotThrow(d.Dispose, d.GetType().Name);
        Assert.That(frame.ReferenceCount, Is.Zero, "a second Dispose dropped another reference");
        var extra = new FramePool(2 * MiB);
        extra.Dispose();
        Assert.DoesNotThrow(extra.Dispose);
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero);
        Figures.Add("CoreCLR: types disposed twice", disposables.Length + 1);
    }

    private const ulong Va = 4 * MiB;

    [Test, CancelAfter(60_000)]
    public void Use_after_Dispose_throws_ObjectDisposedException()
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        var areas = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        space.Activate();
        space.Dispose();
        areas.Dispose();
        Assert.That(space.IsDisposed, Is.True);
        Assert.That(VmSpace.Current, Is.Null, "a disposed space stays the current one");
        var uses = new (string, Action)[]
        {
            ("Cursor", () => space.Cursor(VaddrRange.FromLength(0, Page))),
            ("CursorMut", () => space.CursorMut(VaddrRange.FromLength(0, Page))),
            ("Activate", () => space.Activate()),
            ("Reader", () => space.Reader(0, 8)),
            ("Writer", () => space.Writer(0, 8)),
            ("ForkCopyOnWrite", () => space.ForkCopyOnWrite()),
            ("HandlePageFault", () => space.HandlePageFault(0, PageFaultAccess.Read)),
            ("AddressSpace.Map", () => areas.Map(Page, new AreaBackend.Alloc(false), new VmMapOptions())),
            ("AddressSpace.Fork", () => areas.Fork()),
            ("AddressSpace.Unmap", () => areas.Unmap(VaddrRange.FromLength(0, Page))),
        };
        foreach ((string name, Action use) in uses)
            Assert.Throws<ObjectDisposedException>(use, name);
        Figures.Add("CoreCLR: uses after Dispose checked", uses.Length);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static (WeakReference Space, nint HostBase) CreateAndDrop(FramePool pool, int pages)
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 4 * MiB, Pool = pool });
        for (int i = 0; i < pages; i++) MapFilled(space, (ulong)i * Page, 0x77);
        return (new WeakReference(space), space.HostBase);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference CreateAndDropAreas(FramePool pool)
    {
        var areas = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool });
        ulong va = areas.Map(64 * Page, new AreaBackend.Alloc(false), new VmMapOptions { Flags = PageFlags.RW });
        Assert.That(areas.Space.HandlePageFault(va, PageFaultAccess.Write), Is.True); // a window of frames from a reserved chunk
        return new WeakReference(areas);
    }

    /// <summary>
    /// A space (or an address space) dropped without <c>Dispose</c> is finalized: its frames, its
    /// chunk reservations and its arena go back, as <c>Dispose</c> would give them.
    /// </summary>
    [Test, CancelAfter(60_000)]
    public void A_space_dropped_without_Dispose_gives_its_frames_and_arena_back_when_collected()
    {
        using var pool = new FramePool(4 * MiB);
        (WeakReference weak, nint hostBase) = CreateAndDrop(pool, 8);
        WeakReference weakAreas = CreateAndDropAreas(pool);
        Assert.That(pool.FramesInUse, Is.GreaterThan(8));
        for (int i = 0; i < 5 && (weak.IsAlive || weakAreas.IsAlive || pool.FramesInUse > 0); i++)
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }
        Assert.That(weak.IsAlive || weakAreas.IsAlive, Is.False, "the dropped spaces were not collected");
        Assert.That(pool.FramesInUse, Is.Zero, "the finalizers gave every frame back");
        Assert.That(pool.ReservedChunks, Is.Zero, "the address space's finalizer gave its chunk back");
        bool arenaStillMapped = File.ReadLines("/proc/self/maps").Any(l => l.StartsWith($"{hostBase:x}-", StringComparison.Ordinal));
        Assert.That(arenaStillMapped, Is.False, "the dropped space's arena went back to the host");
        Figures.Add("CoreCLR: spaces dropped without Dispose and finalized", 2);
    }

    /// <summary>
    /// A reader outlives its space's Dispose (another thread disposed it mid-copy, or a caller kept
    /// using it): the arena was unmapped, and the next space is reserved at the same host address.
    /// The stale reader must fault, never read the new space's memory.
    /// </summary>
    [Test, CancelAfter(60_000)]
    public void A_reader_of_a_disposed_space_never_reads_the_next_spaces_memory()
    {
        var a = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        a.Activate();
        VmReader<Fallible> stale = a.Reader(Va, 8);
        VmReader<Fallible> staleValue = stale;
        a.Dispose();
        using var b = new VmSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = _pool });
        MapFilled(b, Va, 0x5B);
        var buf = new byte[8];
        CopyResult r = stale.ReadFallible(buf);
        Assert.That(buf, Has.None.EqualTo((byte)0x5B), $"the disposed space's reader read the next space's data ({r}); arena reused: {a.HostBase == b.HostBase}");
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        IoResult<ulong> v = staleValue.ReadVal<ulong>(); // a load checks the gate after loading, and throws the value away
        Assert.That(v.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(v.Value, Is.Zero, "the next space's bytes came back from a disposed space's reader");
        Assert.That(staleValue.Remain, Is.EqualTo(8UL), "a failed ReadVal does not move the cursor");
    }

    // ---- a child process: a stack overflow, a foreign native SIGSEGV ------------------------------

    private const string ChildProgram = """
        using System.Runtime.InteropServices;
        using UVm;
        using UVm.Io;
        using UVm.Spaces;

        var space = new VmSpace(new VmSpaceOptions { Size = 4UL << 20 });
        space.Activate();
        var buf = new byte[8];
        VmReader<Fallible> r = space.Reader(4096, 8);
        CopyResult res = r.ReadFallible(buf);
        Console.Error.WriteLine($"uvm-child: fallible read -> {res.Error}");
        try { string? s = null; _ = s!.Length; }
        catch (NullReferenceException) { Console.Error.WriteLine("uvm-child: NullReferenceException caught"); }
        Console.Error.Flush();
        if (args.Length > 0 && args[0] == "native-segv")
            Console.Error.WriteLine($"uvm-child: unreachable {Native.strlen(16)}"); // a fault in libc, not in UVm or managed code
        else
            Console.Error.WriteLine($"uvm-child: unreachable {Recurse(0)}");

        static int Recurse(int depth)
        {
            Span<byte> pad = stackalloc byte[128];
            pad[depth & 127] = (byte)depth;
            return Recurse(depth + 1) + pad[5];
        }

        static class Native
        {
            [DllImport("libc.so.6")]
            public static extern nuint strlen(nint s);
        }
        """;

    private static readonly Lazy<string> s_child = new(BuildChild, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Builds the child program once, against the tested UVm.dll; returns its folder.</summary>
    private static string BuildChild()
    {
        string uvmDll = typeof(VmSpace).Assembly.Location;
        string native = Path.Combine(Path.GetDirectoryName(uvmDll)!, "libuvm.so");
        Assert.That(File.Exists(native), Is.True, $"libuvm.so beside {uvmDll}");
        string dir = Tools.NewTempDir("uvm-child");
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Tools.DeleteQuietly(dir);
        File.WriteAllText(Path.Combine(dir, "Child.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <UseAppHost>false</UseAppHost>
                <InvariantGlobalization>true</InvariantGlobalization>
              </PropertyGroup>
              <ItemGroup>
                <Reference Include="UVm"><HintPath>{uvmDll}</HintPath></Reference>
                <None Include="{native}" Link="libuvm.so" CopyToOutputDirectory="PreserveNewest" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(dir, "Program.cs"), ChildProgram);
        Tools.DotnetOk(["build", "-c", "Release", "-nologo", "-v", "q", "--disable-build-servers", "-p:UseSharedCompilation=false"], dir, TimeSpan.FromSeconds(180));
        return dir;
    }

    /// <summary>Runs the child in <paramref name="mode"/>; returns its exit code and its output (stdout and stderr).</summary>
    private static (int ExitCode, string Output) RunChild(string mode)
    {
        (int exit, string output) = Tools.Run(Tools.Dotnet, [Path.Combine("bin", "Release", "net10.0", "Child.dll"), mode], s_child.Value,
            TimeSpan.FromSeconds(60), new Dictionary<string, string> { ["DOTNET_DbgEnableMiniDump"] = "0" });
        TestContext.Out.WriteLine($"child ({mode}) exit code {exit}; output starts:\n{string.Join("\n", output.Split('\n').Take(8))}");
        Assert.That(output, Does.Contain("uvm-child: fallible read -> PageFault"), "UVm's handler did not recover the child's fault");
        Assert.That(output, Does.Contain("uvm-child: NullReferenceException caught"));
        Assert.That(output, Does.Not.Contain("unreachable"));
        return (exit, output);
    }

    [Test, Category("Slow"), CancelAfter(240_000)]
    public void A_stack_overflow_in_a_process_using_UVm_is_still_reported_by_the_runtime()
    {
        (int exit, string output) = RunChild("overflow");
        Assert.That(output, Does.Contain("Stack overflow"), "the runtime no longer reports the stack overflow");
        Assert.That(exit, Is.EqualTo(128 + 6), "the child should die of SIGABRT, as the runtime makes it after a stack overflow");
        Figures.Add("CoreCLR: child processes that overflowed their stack (reported, SIGABRT)", 1);
    }

    [Test, Category("Slow"), CancelAfter(240_000)]
    public void A_SIGSEGV_in_native_code_of_a_dotnet_process_using_UVm_still_kills_it_with_SIGSEGV()
    {
        // UVm's handler sees a fault outside its primitives and forwards it to the runtime's, which
        // sees it outside managed code and lets the default action kill the process.
        (int exit, _) = RunChild("native-segv");
        Assert.That(exit, Is.EqualTo(128 + 11), "the child should die of SIGSEGV");
        Figures.Add("CoreCLR: child processes killed by a foreign native SIGSEGV", 1);
    }
}
