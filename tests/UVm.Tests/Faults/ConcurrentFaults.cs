using System.Diagnostics;
using NUnit.Framework;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Faults;

/// <summary>
/// Faults on many threads at once: one page faulted by several threads is resolved by the
/// handler once; faults keep resolving, with consistent counts, while the GC runs.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class ConcurrentFaults : GuestFixture
{
    private static readonly TimeSpan JoinLimit = TimeSpan.FromSeconds(60);

    private static void RunAll(IEnumerable<Thread> threads)
    {
        var list = threads.ToList();
        list.ForEach(t => t.Start());
        foreach (Thread t in list) Assert.That(t.Join(JoinLimit), Is.True, $"{t.Name} hung");
    }

    [Test, CancelAfter(90_000)]
    public void Threads_faulting_on_one_page_get_it_resolved_once([Values(2, 4, 8)] int threads)
    {
        int calls = 0;
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            Interlocked.Increment(ref calls);
            Thread.Sleep(50); // let the other threads pile up on the same fault
            return pager.Handle(s, info);
        });
        using var start = new Barrier(threads);
        var results = new CopyResult[threads];
        var contents = new byte[threads][];

        RunAll(Enumerable.Range(0, threads).Select(i => new Thread(() =>
        {
            Space.Activate();
            contents[i] = new byte[Page];
            start.SignalAndWait();
            var reader = Space.Reader(Va, Page);
            results[i] = reader.ReadFallible(contents[i]);
        }) { Name = $"faulter {i}" }));

        Assert.That(results, Is.All.EqualTo(new CopyResult(Page, null, null)));
        Assert.That(contents, Is.All.EqualTo(PatternOf(Va, (int)Page)));
        Assert.That(calls, Is.EqualTo(1));
        Assert.That(Space.HandledFaults, Is.EqualTo(1));
        Assert.That(Space.SpuriousFaults, Is.LessThanOrEqualTo(threads - 1), "the others found it mapped or filled it spuriously");
        Assert.That(Space.UnresolvedFaults, Is.Zero);
    }

    [Test, CancelAfter(90_000)]
    public void Faults_keep_resolving_while_the_GC_runs()
    {
        const int workers = 3;
        var budget = TimeSpan.FromSeconds(2);
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler(pager.Handle);
        var iterations = new int[workers];
        var failures = new List<string>();
        int running = workers;

        var threads = Enumerable.Range(0, workers).Select(i => new Thread(() =>
        {
            try
            {
                Space.Activate();
                // Each worker has a page in a 2 MiB region of its own.
                ulong va = (ulong)(i + 1) * Paging.HugePageSize;
                byte[] expected = PatternOf(va, (int)Page);
                var clock = Stopwatch.StartNew();
                while (clock.Elapsed < budget && iterations[i] < 20_000)
                {
                    byte[] dst = new byte[Page]; // garbage for the GC, and a buffer it may move
                    var reader = Space.Reader(va, Page);
                    CopyResult r = reader.ReadFallible(dst);
                    if (!r.IsOk || !dst.AsSpan().SequenceEqual(expected))
                    {
                        lock (failures) failures.Add($"worker {i} iteration {iterations[i]}: {r}");
                        return;
                    }
                    using (var cursor = Space.CursorMut(VaddrRange.FromLength(va, Page))) cursor.Unmap(Page);
                    iterations[i]++;
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
        }) { Name = $"worker {i}" }).ToList();

        threads.ForEach(t => t.Start());
        int collections = 0;
        while (Volatile.Read(ref running) > 0)
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            collections++;
            Thread.Sleep(1);
        }
        foreach (Thread t in threads) Assert.That(t.Join(JoinLimit), Is.True, $"{t.Name} hung");

        Assert.That(failures, Is.Empty);
        Assert.That(collections, Is.GreaterThan(0));
        Assert.That(iterations, Is.All.GreaterThan(0));
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
        MapPatterned(Va);
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) => info.Address >= 4 * Paging.HugePageSize && pager.Handle(s, info));
        var failures = new List<string>();

        RunAll(Enumerable.Range(0, 4).Select(i => new Thread(() =>
        {
            Space.Activate();
            for (int n = 0; n < 500; n++)
            {
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
        }) { Name = $"copier {i}" }));

        Assert.That(failures, Is.Empty);
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(4 * 500));
        Assert.That(Space.HandledFaults, Is.EqualTo(4 * 500));
    }
}
