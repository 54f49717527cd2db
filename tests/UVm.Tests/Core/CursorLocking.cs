using NUnit.Framework;
using UVm.Frames;
using UVm.Spaces;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Core;

/// <summary>
/// The lock protocol: a cursor owns the page-table sub-tree covering its range until disposed.
/// A cursor that overlaps a live one waits; cursors on disjoint sub-trees do not.
/// </summary>
[NonParallelizable]
public sealed class CursorLocking : SpaceFixture
{
    /// <summary>How long a cursor that should be blocked is given to (wrongly) get through.</summary>
    private static readonly TimeSpan StillBlocked = TimeSpan.FromMilliseconds(300);

    /// <summary>How long a cursor that should get through is given to do so.</summary>
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(30);

    /// <summary>How long a cursor thread holds its cursor at most, so that a wrong wait ends instead of hanging.</summary>
    private static readonly TimeSpan HoldAtMost = TimeSpan.FromSeconds(45);

    protected override ulong SpaceSize => 4 * GiB;

    /// <summary>
    /// A thread that opens a cursor, reports it acquired, then runs <paramref name="use"/> and reports
    /// that too, and disposes the cursor when told to (or after a long timeout, noted in
    /// <see cref="Released"/>, so that a wrong wait on it ends instead of hanging).
    /// </summary>
    private sealed class CursorThread : IDisposable
    {
        private readonly Thread _thread;
        private readonly ManualResetEventSlim _release = new();
        private Exception? _error;

        public CursorThread(Func<Cursor> open, Action<Cursor>? use = null)
        {
            _thread = new Thread(() =>
            {
                try
                {
                    using Cursor c = open();
                    Acquired.Set();
                    use?.Invoke(c);
                    Used.Set();
                    _release.Wait(HoldAtMost);
                    Released = true;
                }
                catch (Exception e)
                {
                    _error = e;
                }
            })
            { IsBackground = true, Name = "second cursor" };
            _thread.Start();
        }

        public ManualResetEventSlim Acquired { get; } = new();
        public ManualResetEventSlim Used { get; } = new();

        /// <summary>Whether the thread has stopped holding its cursor (told to, or its time was up).</summary>
        public volatile bool Released;

        public void Dispose()
        {
            _release.Set();
            Deadlines.Join(_thread, "the cursor thread to finish", Generous);
            if (_error != null) throw new AssertionException("the cursor thread failed: " + _error);
        }
    }

    private void AssertWaitsUntilDisposed(Cursor first, Func<Cursor> openSecond)
    {
        using var second = new CursorThread(openSecond);
        Assert.That(second.Acquired.Wait(StillBlocked), Is.False, "the second cursor got through while the first is alive");
        first.Dispose();
        Assert.That(second.Acquired.Wait(Generous), Is.True, "the second cursor did not get through after the first was disposed");
    }

    private static void AssertDoesNotWait(Func<Cursor> openSecond)
    {
        using var second = new CursorThread(openSecond, c => c.Query().Item?.Dispose());
        Assert.That(second.Used.Wait(Generous), Is.True, "the second cursor waited although its range is disjoint");
    }

    [Test, CancelAfter(60_000)]
    public void A_cursor_on_the_same_range_waits_until_the_first_is_disposed()
    {
        CursorMut first = Space.CursorMut(Span(0, Page));
        try
        {
            AssertWaitsUntilDisposed(first, () => Space.CursorMut(Span(0, Page)));
        }
        finally
        {
            first.Dispose();
        }
    }

    [Test, CancelAfter(60_000)]
    public void Disposing_a_cursor_does_not_wait_for_the_cursor_that_was_waiting_for_it()
    {
        CursorMut first = Space.CursorMut(Span(0, Page));
        using var second = new CursorThread(() => Space.CursorMut(Span(0, Page)));
        Assert.That(second.Acquired.Wait(StillBlocked), Is.False);

        first.Dispose(); // had it waited for the second cursor, it would return only once that one let go
        Assert.That(second.Released, Is.False, "Dispose waited for the cursor that took over the range");
        Assert.That(second.Acquired.Wait(Generous), Is.True);
    }

    [Test, CancelAfter(60_000)]
    public void Disposing_an_empty_cursor_does_not_wait_for_a_disjoint_cursor_of_the_same_thread()
    {
        // A space of its own: if the dispose deadlocks, its locks stay held forever and it is leaked.
        var space = new VmSpace(new VmSpaceOptions { Size = GiB, Pool = Pool });
        using var done = new ManualResetEventSlim();
        var worker = Deadlines.Background("narrow and wide cursors", () =>
        {
            CursorMut narrow = space.CursorMut(Span(0, Page));      // guard: the last-level node of [0, 2 MiB)
            Cursor wide = space.Cursor(Span(Huge, 2 * Huge));       // disjoint; guard: the 2 MiB-level node above it
            narrow.Dispose();                                       // reclaims its empty node: must not wait for `wide`
            wide.Dispose();
            done.Set();
        });
        worker.Start();
        Assert.That(Deadlines.TryWait(done, Generous), Is.True, "disposing a cursor deadlocked on a disjoint cursor of the same thread");

        // The empty node it could not reclaim then is dropped by the next mutable cursor passing through.
        using (CursorMut c = space.CursorMut(Span(0, GiB)))
            Assert.That(c.Unmap(GiB), Is.Zero);
        Assert.That(space.PageTableNodes, Is.EqualTo(1));
        space.Dispose();
    }

    [Test, CancelAfter(60_000)]
    public void A_read_only_cursor_on_an_overlapping_range_waits_too()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Page, f);
        CursorMut first = Space.CursorMut(Span(0, 4 * Page));
        try
        {
            AssertWaitsUntilDisposed(first, () => Space.Cursor(Span(2 * Page, 4 * Page)));
        }
        finally
        {
            first.Dispose();
        }
    }

    [Test, CancelAfter(60_000)]
    public void A_mutable_cursor_waits_for_a_read_only_one()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Page, f);
        Cursor first = Space.Cursor(Span(0, 4 * Page));
        try
        {
            AssertWaitsUntilDisposed(first, () => Space.CursorMut(Span(Page, Page)));
        }
        finally
        {
            first.Dispose();
        }
    }

    [Test, CancelAfter(60_000)]
    public void A_wider_cursor_waits_when_it_reaches_the_narrower_cursors_node()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(Huge + Page, f);
        CursorMut narrow = Space.CursorMut(Span(Huge, Page));
        try
        {
            using var wide = new CursorThread(() => Space.Cursor(Span(0, GiB)), c =>
            {
                c.Jump(Huge + Page);
                c.Query().Item?.Dispose();
            });
            Assert.That(wide.Acquired.Wait(Generous), Is.True, "the wide cursor locks a node above the narrow one's");
            Assert.That(wide.Used.Wait(StillBlocked), Is.False, "the wide cursor read a node the narrow one owns");
            narrow.Dispose();
            Assert.That(wide.Used.Wait(Generous), Is.True);
        }
        finally
        {
            narrow.Dispose();
        }
    }

    [Test, CancelAfter(60_000)]
    public void Cursors_under_different_2MiB_nodes_do_not_wait()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        MapAt(0, a);
        MapAt(Huge, b);
        using CursorMut first = Space.CursorMut(Span(0, Huge));
        AssertDoesNotWait(() => Space.CursorMut(Span(Huge, Huge)));
        AssertDoesNotWait(() => Space.Cursor(Span(Huge, 2 * Page)));
    }

    [Test, CancelAfter(60_000)]
    public void Cursors_under_different_1GiB_nodes_do_not_wait()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        MapAt(Page, a);
        MapAt(GiB + Page, b);
        using CursorMut first = Space.CursorMut(Span(0, GiB));
        AssertDoesNotWait(() => Space.CursorMut(Span(GiB, GiB)));
        AssertDoesNotWait(() => Space.Cursor(Span(GiB, Huge)));
    }

    [Test, CancelAfter(60_000)]
    public void Mutable_cursors_on_disjoint_ranges_of_an_empty_region_do_not_wait()
    {
        // No node exists yet: each mutable cursor creates the nodes down to its own guard.
        using (CursorMut first = Space.CursorMut(Span(0, Page)))
            AssertDoesNotWait(() => Space.CursorMut(Span(Huge, Page)));
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
        using (CursorMut first = Space.CursorMut(Span(2 * GiB, 4 * Page)))
            AssertDoesNotWait(() => Space.CursorMut(Span(3 * GiB + Huge, Huge)));
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
    }

    [Test, CancelAfter(60_000)]
    public void Two_mappers_in_an_empty_region_each_map_their_own_range()
    {
        using UFrame a = Pool.AllocFrame();
        using UFrame b = Pool.AllocFrame();
        using (CursorMut first = Space.CursorMut(Span(0, Page)))
        {
            first.Map(a, RW);
            using var second = new CursorThread(() => Space.CursorMut(Span(GiB, Page)), c => ((CursorMut)c).Map(b, RW));
            Assert.That(second.Used.Wait(Generous), Is.True);
        }
        Assert.That(QueryAt(0), Is.EqualTo(Ram(0, a, RW)));
        Assert.That(QueryAt(GiB), Is.EqualTo(Ram(GiB, b, RW)));
        HostMaps.AssertMirrored(Space);
    }

    [Test, CancelAfter(60_000)]
    public void Disposing_the_space_waits_for_a_cursor_of_another_thread()
    {
        using UFrame f = Pool.AllocFrame();
        MapAt(0, f);
        using var holder = new CursorThread(() => Space.CursorMut(Span(0, Page)));
        Assert.That(holder.Acquired.Wait(Generous), Is.True);

        using var disposed = new ManualResetEventSlim();
        var disposer = Deadlines.Background("disposer", () => { Space.Dispose(); disposed.Set(); });
        disposer.Start();
        Assert.That(disposed.Wait(StillBlocked), Is.False, "the space was torn down under a live cursor");
        holder.Dispose();
        Assert.That(disposed.Wait(Generous), Is.True);
        Deadlines.Join(disposer, "the disposer to end", Generous);
        Assert.That(f.ReferenceCount, Is.EqualTo(1), "the space's mapping reference is returned");
    }

    [Test, CancelAfter(120_000)]
    public void Parallel_cursors_on_disjoint_ranges_keep_the_table_and_the_host_consistent()
    {
        const int threads = 8, rounds = 40;
        using USegment keep = Pool.AllocSegment(threads);
        var errors = new List<Exception>();
        var workers = Enumerable.Range(0, threads).Select(t => Deadlines.Background($"worker {t}", () =>
        {
            try
            {
                ulong baseVa = (ulong)t * 3 * Huge + (ulong)(t % 2) * GiB;
                using UFrame mine = keep.FrameAt((ulong)t);
                for (int i = 0; i < rounds; i++)
                {
                    using USegment seg = Pool.AllocSegment(4);
                    using (CursorMut c = Space.CursorMut(Span(baseVa, Huge)))
                    {
                        c.Map(seg, RW);
                        c.Map(mine, RW);
                        c.Jump(baseVa);
                        c.ProtectNext(Page, (ref PageFlags fl, ref CachePolicy ca) => fl = PageFlags.R);
                    }
                    using (CursorMut c = Space.CursorMut(Span(baseVa, Huge)))
                    {
                        c.Jump(baseVa + Page);
                        if (c.Unmap(Huge - Page) != 4) throw new InvalidOperationException("wrong unmap count");
                        c.Jump(baseVa);
                        if (i < rounds - 1 && c.Unmap(Page) != 1) throw new InvalidOperationException("wrong unmap count");
                    }
                }
            }
            catch (Exception e)
            {
                lock (errors) errors.Add(e);
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        Deadlines.JoinAll(workers, TimeSpan.FromSeconds(100));

        Assert.That(errors, Is.Empty);
        Assert.That(Pool.FramesInUse, Is.EqualTo(threads + threads), "each worker left one frame mapped, and the handle holds the rest");
        HostMaps.AssertMirrored(Space);
        for (int t = 0; t < threads; t++)
        {
            ulong va = (ulong)t * 3 * Huge + (ulong)(t % 2) * GiB;
            Assert.That(QueryAt(va), Does.Contain("ram").And.Contain($"{PageProperty.New(PageFlags.R)}"));
        }
        Assert.That(UnmapAt(0, Space.Size), Is.EqualTo((ulong)threads));
        Assert.That(Space.PageTableNodes, Is.EqualTo(1));
        HostMaps.AssertMirrored(Space);
    }
}
