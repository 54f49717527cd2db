using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Spaces;
using UVm.Tests.Areas;
using static UVm.Tests.TestSupport.Refusals;

namespace UVm.Tests.Snapshots;

/// <summary>
/// The write watch lists exactly the pages written since it started over: a page written once
/// is listed once, a page never written (even one fault-around filled or copied) never.
/// </summary>
[NonParallelizable]
public sealed class WriteWatch : AreaFixture
{
    private static List<ulong> Offsets(IEnumerable<ulong> pages, ulong area) => pages.Select(p => (p - area) / Page).ToList();

    [Test]
    public void Only_the_pages_written_are_listed_not_those_fault_around_filled_or_read()
    {
        ulong area = MapLazy(Parent, 64);
        Parent.ResetWriteWatch(Span(area, 64 * Page));
        WriteU64(Parent, area + 5 * Page, 1);
        WriteU64(Parent, area + 17 * Page, 2);
        WriteU64(Parent, area + 5 * Page + 8, 3);
        Read(Parent, area + 30 * Page, 8);
        Assert.That(Pages(Parent, Span(area, 64 * Page)), Has.Count.GreaterThan(3), "precondition: fault-around filled more pages than were written");

        Assert.That(Offsets(Parent.WrittenPages(Span(area, 64 * Page)), area), Is.EqualTo(new ulong[] { 5, 17 }));
        Assert.That(PageAt(Parent, area + 6 * Page)!.Value.Flags, Is.EqualTo(PageFlags.R), "a neighbour filled by fault-around waits for its first write");
        WriteU64(Parent, area + 6 * Page, 4);
        Assert.That(Offsets(Parent.WrittenPages(Span(area, 64 * Page)), area), Is.EqualTo(new ulong[] { 5, 6, 17 }));
        Assert.That(Offsets(Parent.WrittenPages(Span(area + 6 * Page, Page)), area), Is.EqualTo(new ulong[] { 6 }), "a sub-range lists its own pages");
    }

    [Test]
    public void Resetting_the_watch_starts_over_and_removes_write_access_from_the_range()
    {
        ulong area = Parent.Map(32 * Page, Populated, At(2 * MiB));
        Parent.ResetWriteWatch(Span(area, 32 * Page));
        for (ulong i = 0; i < 32; i += 2) WriteU64(Parent, area + i * Page, i);
        Assert.That(Parent.WrittenPages(Span(area, 32 * Page)), Has.Count.EqualTo(16));

        Parent.ResetWriteWatch(Span(area, 32 * Page));

        Assert.That(Parent.WrittenPages(Span(area, 32 * Page)), Is.Empty);
        Assert.That(Pages(Parent, Span(area, 32 * Page)).Values.Select(p => p.Flags).Distinct(), Is.EqualTo(new[] { PageFlags.R }));
        WriteU64(Parent, area + 31 * Page, 7);
        Assert.That(Offsets(Parent.WrittenPages(Span(area, 32 * Page)), area), Is.EqualTo(new ulong[] { 31 }));
        Assert.That(ReadU64(Parent, area + 2 * Page), Is.EqualTo(2UL), "contents are untouched by the watch");
    }

    [Test]
    public void Copy_on_write_after_a_fork_copies_the_written_page_alone_while_watched()
    {
        ulong area = Parent.Map(16 * Page, Populated, At(2 * MiB));
        AddressSpace child = ForkOf(Parent);
        Parent.ResetWriteWatch(Span(area, 16 * Page));
        long copies = Parent.Stats.CopyOnWritePages;

        WriteU64(Parent, area + 3 * Page, 1);

        Assert.That(Offsets(Parent.WrittenPages(Span(area, 16 * Page)), area), Is.EqualTo(new ulong[] { 3 }));
        Assert.That(Parent.Stats.CopyOnWritePages - copies, Is.EqualTo(1), "the window left the watched neighbours alone");
        Assert.That(ReadU64(child, area + 3 * Page), Is.Zero);
    }

    [Test]
    public void Protect_giving_write_access_back_does_not_hide_a_write()
    {
        ulong area = Parent.Map(8 * Page, Populated, At(2 * MiB));
        using USegment segment = Pool.AllocSegment(8);
        ulong shared = Parent.Map(8 * Page, new AreaBackend.LinearFrames(segment, 0), At(4 * MiB));
        Parent.ResetWriteWatch(Span(0, 8 * MiB));
        Parent.Protect(Span(area, 8 * Page), PageFlags.R);
        Parent.Protect(Span(0, 8 * MiB), PageFlags.RW);

        WriteU64(Parent, area + Page, 1);
        WriteU64(Parent, shared + 2 * Page, 2);

        Assert.That(Parent.WrittenPages(Span(0, 8 * MiB)), Is.EqualTo(new[] { area + Page, shared + 2 * Page }));
    }

    [Test]
    public void Random_writes_are_listed_exactly([Values(1, 16)] int faultAround)
    {
        int seed = Seeds.For(nameof(Random_writes_are_listed_exactly));
        var random = new Random(seed);
        Parent.FaultAroundPages = faultAround;
        ulong area = MapLazy(Parent, 512);
        for (int i = 0; i < 40; i++) WriteU64(Parent, area + (ulong)random.Next(512) * Page, 1); // some resident before
        Parent.ResetWriteWatch(Span(area, 512 * Page));
        var written = new SortedSet<ulong>();
        for (int i = 0; i < 200; i++)
        {
            ulong page = area + (ulong)random.Next(512) * Page;
            if (random.Next(3) == 0) Read(Parent, page, 8);
            else
            {
                WriteU64(Parent, page + (ulong)random.Next(512) * 8, (ulong)i);
                written.Add(page);
            }
        }
        Assert.That(Parent.WrittenPages(Span(area, 512 * Page)), Is.EqualTo(written.ToList()), $"seed {seed}");
    }

    [Test]
    public void Writes_on_two_threads_are_all_listed()
    {
        ulong area = MapLazy(Parent, 1024);
        Parent.ResetWriteWatch(Span(area, 1024 * Page));
        Thread[] writers = Enumerable.Range(0, 2).Select(t => Deadlines.Background($"writer {t}", () =>
        {
            for (ulong i = (ulong)t; i < 1024; i += 2) WriteU64(Parent, area + i * Page, i);
            VmSpace.Deactivate();
        })).ToArray();
        foreach (Thread w in writers) w.Start();
        Deadlines.JoinAll(writers);
        Assert.That(Parent.WrittenPages(Span(area, 1024 * Page)), Has.Count.EqualTo(1024));
    }

    [Test]
    public void Bad_ranges_are_refused_with_a_specific_error_and_change_nothing(
        [Values(0UL, 1UL, Page - 1, 1UL << 47, 1UL << 52, 1UL << 63, ulong.MaxValue)] ulong extreme)
    {
        ulong area = MapLazy(Parent, 8);
        WriteU64(Parent, area, 1);
        List<string> before = Snapshot(Parent, Span(0, 8 * MiB));
        foreach (VaddrRange range in new[] { new VaddrRange(extreme, extreme), new VaddrRange(area, extreme), new VaddrRange(extreme & ~(Page - 1), ulong.MaxValue & ~(Page - 1)) })
        {
            Exception? e1 = Catch(() => Parent.ResetWriteWatch(range));
            Exception? e2 = Catch(() => Parent.WrittenPages(range));
            foreach (Exception? e in new[] { e1, e2 })
            {
                Assert.That(e, Is.Not.Null, $"{range} was accepted");
                Assert.That(e is ArgumentException || e is UVmException { Error: UVmError.InvalidArgs }, $"{range}: {e}");
            }
        }
        Assert.That(Snapshot(Parent, Span(0, 8 * MiB)), Is.EqualTo(before));
        Assert.That(PageAt(Parent, area)!.Value.Flags, Is.EqualTo(PageFlags.RW), "no right was taken");
        AddressSpace gone = NewAddressSpace();
        gone.Dispose();
        Assert.Throws<ObjectDisposedException>(() => gone.ResetWriteWatch(Span(0, Page)));
        Assert.Throws<ObjectDisposedException>(() => gone.WrittenPages(Span(0, Page)));
    }

    [Test]
    public void The_watch_goes_on_across_a_reset_and_lists_what_was_written_before_it()
    {
        Parent.FaultAroundPages = 1;
        ulong area = Parent.Map(16 * Page, Populated, At(2 * MiB));
        VmSnapshot snapshot = Track(Parent.Snapshot());
        Parent.ResetWriteWatch(Span(area, 16 * Page));
        WriteU64(Parent, area + 2 * Page, 1);
        Parent.Reset(snapshot);
        WriteU64(Parent, area + 9 * Page, 2);
        Assert.That(Offsets(Parent.WrittenPages(Span(area, 16 * Page)), area), Is.EqualTo(new ulong[] { 2, 9 }));
        Assert.That(ReadU64(Parent, area + 2 * Page), Is.Zero, "the reset brought the page back");
    }
}
