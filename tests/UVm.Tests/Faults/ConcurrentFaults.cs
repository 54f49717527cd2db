using NUnit.Framework;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.TestSupport;
using UVm.Interop;

namespace UVm.Tests.Faults;

/// <summary>
/// Faults on many threads at once: one page faulted by several threads is resolved by the
/// handler once; faults keep resolving, with consistent counts, while the GC runs. Every test
/// checks that the threads really overlapped (by counts, not by time), so none passes by having
/// run its threads one after the other.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class ConcurrentFaults : GuestFixture
{
    /// <summary>
    /// How many faults the fault bridge claims for one read of an unmapped page before the read's
    /// thread reaches the page-fault handler (the copy may touch the page more than once first):
    /// measured on a space of its own, with a handler of its own.
    /// </summary>
    private ulong ClaimsBeforeTheHandler()
    {
        using var probe = new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = Pool });
        ulong before = NativeFaults.ClaimedFaults, atHandler = 0;
        var pager = new DemandPager();
        probe.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            atHandler = NativeFaults.ClaimedFaults - before;
            return pager.Handle(s, info);
        });
        probe.Activate();
        var reader = probe.Reader(Va, Page);
        Assert.That(reader.ReadFallible(new byte[Page]).IsOk, Is.True, "the probe's read");
        Space.Activate();
        Assert.That(atHandler, Is.GreaterThan(0UL), "the probe's read reached its handler through a claimed fault");
        return atHandler;
    }

    [Test, CancelAfter(90_000)]
    public void Threads_faulting_on_one_page_get_it_resolved_once([Values(2, 4, 8)] int threads)
    {
        int calls = 0;
        bool pileUp = false;
        ulong perThread = ClaimsBeforeTheHandler();
        ulong claimedBefore = NativeFaults.ClaimedFaults;
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            Interlocked.Increment(ref calls);
            // Hold the fault until every thread has faulted on the page (counted by the faults the
            // bridge claimed), so the others really pile up on it; a deadline, not a hang, if not.
            pileUp = Deadlines.TryUntil(() => NativeFaults.ClaimedFaults - claimedBefore >= perThread * (ulong)threads);
            return pager.Handle(s, info);
        });
        using var start = new Barrier(threads);
        var results = new CopyResult[threads];
        var contents = new byte[threads][];

        TestThread.JoinAll(TestThread.StartAll(threads, i => $"faulter {i}", i =>
        {
            Space.Activate();
            contents[i] = new byte[Page];
            Assert.That(Deadlines.TrySignalAndWait(start), Is.True, "the other faulters never arrived at the start");
            var reader = Space.Reader(Va, Page);
            results[i] = reader.ReadFallible(contents[i]);
        }));

        Assert.That(pileUp, Is.True, "the threads never all faulted on the page while its handler ran: nothing piled up");
        Assert.That(results, Is.All.EqualTo(new CopyResult(Page, null, null)));
        Assert.That(contents, Is.All.EqualTo(PatternOf(Va, (int)Page)));
        Assert.That(calls, Is.EqualTo(1));
        Assert.That(Space.HandledFaults, Is.EqualTo(1));
        Assert.That(Space.SpuriousFaults, Is.EqualTo(threads - 1), "each of the others faulted too, then found the page resolved (spurious)");
        Assert.That(Space.UnresolvedFaults, Is.Zero);
    }

    [Test, CancelAfter(90_000)]
    public void Faults_keep_resolving_while_the_GC_runs()
    {
        const int workers = 3, perWorker = 1500, minCollections = 10;
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler(pager.Handle);
        var iterations = new int[workers];
        var failures = new List<string>();
        int running = workers;
        long Total() => Enumerable.Range(0, workers).Sum(i => (long)Volatile.Read(ref iterations[i]));

        var threads = TestThread.StartAll(workers, i => $"worker {i}", i =>
        {
            try
            {
                Space.Activate();
                // Each worker has a page in a 2 MiB region of its own.
                ulong va = (ulong)(i + 1) * Paging.HugePageSize;
                byte[] expected = PatternOf(va, (int)Page);
                for (int n = 0; n < perWorker; n++)
                {
                    byte[] dst = new byte[Page]; // garbage for the GC, and a buffer it may move
                    var reader = Space.Reader(va, Page);
                    CopyResult r = reader.ReadFallible(dst);
                    if (!r.IsOk || !dst.AsSpan().SequenceEqual(expected))
                    {
                        lock (failures) failures.Add($"worker {i} iteration {n}: {r}");
                        return;
                    }
                    using (var cursor = Space.CursorMut(VaddrRange.FromLength(va, Page))) cursor.Unmap(Page);
                    Volatile.Write(ref iterations[i], n + 1);
                }
            }
            catch (Exception e)
            {
                lock (failures) failures.Add($"worker {i}: {e}");
            }
            finally
            {
                Interlocked.Decrement(ref running);
            }
        });

        // A full collection each time the workers have resolved faults since the last one, while any still runs.
        int collections = 0;
        long seen = 0;
        while (Volatile.Read(ref running) > 0)
        {
            Deadlines.Until(() => Total() > seen || Volatile.Read(ref running) == 0, $"the workers made no progress after {seen} iterations");
            if (Volatile.Read(ref running) == 0) break;
            seen = Total();
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            collections++;
        }
        TestThread.JoinAll(threads);

        Assert.That(failures, Is.Empty);
        Assert.That(iterations, Is.All.EqualTo(perWorker));
        Assert.That(collections, Is.GreaterThanOrEqualTo(minCollections), "the GC hardly ran while the faults were resolved: the test proved nothing");
        long total = iterations.Sum();
        Assert.That(Space.HandledFaults, Is.EqualTo(total), "one handled fault per iteration");
        Assert.That(pager.Calls, Is.EqualTo(total));
        Assert.That(Space.UnresolvedFaults, Is.Zero);
        Assert.That(Space.SpuriousFaults, Is.Zero);
        TestContext.Out.WriteLine($"{total} faults resolved during {collections} full collections");
    }

    [Test, CancelAfter(90_000)]
    public void Partial_copies_stay_exact_under_concurrent_faults_elsewhere()
    {
        const int threads = 4, perThread = 500;
        MapPatterned(Va);
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) => info.Address >= 4 * Paging.HugePageSize && pager.Handle(s, info));
        var failures = new List<string>();
        using var start = new Barrier(threads);
        int inLoop = 0;
        long overlapped = 0; // iterations that began while another thread was inside its loop

        TestThread.JoinAll(TestThread.StartAll(threads, i => $"copier {i}", i =>
        {
            Space.Activate();
            Assert.That(Deadlines.TrySignalAndWait(start), Is.True, "the other copiers never arrived at the start");
            Interlocked.Increment(ref inLoop);
            try
            {
                for (int n = 0; n < perThread; n++)
                {
                    if (Volatile.Read(ref inLoop) > 1) Interlocked.Increment(ref overlapped);
                    // Refused: the copy must stop exactly at the hole every time.
                    byte[] dst = new byte[300];
                    var reader = Space.Reader(Va + Page - 100, 300);
                    CopyResult r = reader.ReadFallible(dst);
                    if (r.Bytes != 100 || r.Fault?.Address != Va + Page)
                    {
                        lock (failures) failures.Add($"thread {i}: {r}");
                        return;
                    }
                    // Resolved: a page of this thread's own, faulted in then dropped.
                    ulong own = 4 * Paging.HugePageSize + (ulong)i * Paging.HugePageSize;
                    var other = Space.Reader(own, 8);
                    if (!other.ReadVal<ulong>().IsOk) lock (failures) failures.Add($"thread {i}: resolution failed");
                    using var cursor = Space.CursorMut(VaddrRange.FromLength(own, Page));
                    cursor.Unmap(Page);
                }
            }
            finally
            {
                Interlocked.Decrement(ref inLoop);
            }
        }));

        Assert.That(failures, Is.Empty);
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(threads * perThread));
        Assert.That(Space.HandledFaults, Is.EqualTo(threads * perThread));
        Assert.That(overlapped, Is.GreaterThanOrEqualTo(perThread),
            "the copiers hardly ever ran while another was in its loop: the faults were not concurrent");
    }
}
