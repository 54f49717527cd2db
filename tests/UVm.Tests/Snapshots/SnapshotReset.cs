using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Interop;
using UVm.Spaces;
using UVm.Tests.Areas;

namespace UVm.Tests.Snapshots;

/// <summary>
/// Snapshots: taking one freezes contents, areas and rights without copying; instances are
/// equal to it and independent of each other; a reset in place brings a space back to it,
/// visiting only what changed.
/// </summary>
[NonParallelizable]
public sealed class SnapshotReset : AreaFixture
{
    private const int AreaPages = 64;

    /// <summary>A lazy RW area of 64 pages at 2 MiB, each page holding its index, then a snapshot of it.</summary>
    private (ulong Area, VmSnapshot Snapshot) Prepared(AddressSpace space)
    {
        ulong area = space.Map(AreaPages * Page, Lazy, At(2 * MiB));
        for (ulong i = 0; i < AreaPages; i++) WriteU64(space, area + i * Page, 1000 + i);
        return (area, Track(space.Snapshot()));
    }

    private static void AssertOriginal(AddressSpace space, ulong area)
    {
        for (ulong i = 0; i < AreaPages; i++)
            Assert.That(ReadU64(space, area + i * Page), Is.EqualTo(1000 + i), $"page {i}");
    }

    [Test]
    public void Taking_a_snapshot_copies_nothing_and_shares_every_private_frame_read_only()
    {
        AddressSpace Parent = NewAddressSpaceWithoutHostCopies(); // UVm's own copies, through faults
        ulong area = Parent.Map(AreaPages * Page, Lazy, At(2 * MiB));
        for (ulong i = 0; i < AreaPages; i++) WriteU64(Parent, area + i * Page, 1000 + i);
        long framesBefore = Pool.FramesInUse;
        VmSnapshot snapshot = Track(Parent.Snapshot());

        Assert.That(Pool.FramesInUse, Is.EqualTo(framesBefore), "a snapshot allocates no frame");
        Dictionary<ulong, PageInfo> pages = Pages(Parent, Span(area, AreaPages * Page));
        Assert.That(pages, Has.Count.EqualTo(AreaPages));
        Assert.That(pages.Values.Select(p => p.References).Distinct(), Is.EqualTo(new[] { 2 }), "the space's reference and the snapshot's");
        Assert.That(pages.Values.Select(p => p.Flags).Distinct(), Is.EqualTo(new[] { PageFlags.R }), "write-protected until written");
        Assert.That(snapshot.Areas, Is.EqualTo(Parent.Areas));
        Assert.That(snapshot.Size, Is.EqualTo(Parent.Space.Size));
        Assert.That(snapshot.PageTableBytes, Is.GreaterThan(0));
    }

    [Test]
    public void Reset_brings_back_contents_after_writes_and_compares_only_the_pages_that_changed()
    {
        Parent.FaultAroundPages = 1;
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        WriteU64(Parent, area + 3 * Page, 7);
        WriteU64(Parent, area + 40 * Page, 8);
        Assert.That(ReadU64(Parent, area + 3 * Page), Is.EqualTo(7UL), "precondition: the write landed");

        int compared = Parent.Reset(snapshot);

        Assert.That(compared, Is.EqualTo(2), "two pages were copied on write, nothing else changed");
        AssertOriginal(Parent, area);
        Assert.That(Parent.Reset(snapshot), Is.Zero, "a reset right after a reset has nothing to compare");
    }

    [Test]
    public void The_next_run_copies_into_the_frames_the_reset_freed_without_punching_them()
    {
        AddressSpace Parent = NewAddressSpaceWithoutHostCopies(); // UVm's own copies, through faults
        Parent.FaultAroundPages = 1;
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        WriteU64(Parent, area + 3 * Page, 7);
        ulong copy = PageAt(Parent, area + 3 * Page)!.Value.Paddr;
        long frames = Pool.FramesInUse, punches = Pool.PunchCalls;

        Parent.Reset(snapshot);
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames - 1), "the copy was freed");
        WriteU64(Parent, area + 3 * Page, 8);

        Assert.That(PageAt(Parent, area + 3 * Page)!.Value.Paddr, Is.EqualTo(copy), "the same slot, the same frame");
        Assert.That(Pool.PunchCalls, Is.EqualTo(punches), "a frame about to be overwritten is not punched first");
        Assert.That(ReadU64(Parent, area + 3 * Page), Is.EqualTo(8UL));
        Assert.That(Read(Parent, area + 3 * Page + 8, 64), Is.EqualTo(new byte[64]), "the rest of the page is the snapshot's, not the old copy's");
    }

    [Test]
    public void Scattered_dirt_is_put_back_with_one_host_call_per_span_and_distant_clusters_with_one_each()
    {
        AddressSpace Parent = NewAddressSpaceWithoutHostCopies(); // UVm's own copies, through faults
        Parent.FaultAroundPages = 1;
        ulong area = Parent.Map(4 * Huge, Populated, At(2 * MiB));
        VmSnapshot snapshot = Track(Parent.Snapshot());
        Assume.That(Pages(Parent, Span(area, Huge)).Values.Select(p => p.Paddr).Zip(Enumerable.Range(0, 512)).Select(x => x.First - (ulong)x.Second * Page).Distinct().Count(),
            Is.EqualTo(1), "precondition: the first 2 MiB of the area are one run of frames");
        foreach (ulong i in new ulong[] { 3, 100, 200, 301, 499 }) WriteU64(Parent, area + i * Page, i); // one span
        WriteU64(Parent, area + 3 * Huge + 7 * Page, 7); // another, more than 512 pages on
        long calls = Parent.Space.HostStats.MmapCalls;

        Assert.That(Parent.Reset(snapshot), Is.EqualTo(6));

        long used = Parent.Space.HostStats.MmapCalls - calls;
        Assert.That(used, Is.EqualTo(2), "one call for the five scattered pages, one for the distant one");
        Assert.That(ReadU64(Parent, area + 100 * Page), Is.Zero);
        Assert.That(ReadU64(Parent, area + 3 * Huge + 7 * Page), Is.Zero);
    }

    [Test]
    public void The_cost_of_a_reset_follows_the_pages_written_not_the_size_of_the_space()
    {
        int Dirty(ulong size)
        {
            AddressSpace space = Track(new AddressSpace(new VmSpaceOptions { Size = size, Pool = Pool }));
            space.FaultAroundPages = 1;
            ulong area = space.Map(size - 2 * MiB, Lazy, At(2 * MiB));
            WriteU64(space, area, 1); // one page resident before the snapshot
            VmSnapshot snapshot = Track(space.Snapshot());
            for (ulong i = 0; i < 10; i++) WriteU64(space, area + i * 37 * Page, i);
            return space.Reset(snapshot);
        }
        Assert.That(Dirty(16 * MiB), Is.EqualTo(10));
        Assert.That(Dirty(GiB), Is.EqualTo(10));
    }

    [Test]
    public void Reset_brings_back_areas_unmapped_added_and_reprotected_since_the_snapshot()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        List<string> before = Snapshot(Parent, Span(0, 64 * MiB));
        Parent.Unmap(Span(area + 8 * Page, 8 * Page));
        Parent.Protect(Span(area, 4 * Page), PageFlags.R);
        ulong added = Parent.Map(16 * Page, Populated, Anywhere());
        WriteU64(Parent, added, 99);

        Parent.Reset(snapshot);

        Assert.That(Parent.Areas, Is.EqualTo(snapshot.Areas));
        Assert.That(Snapshot(Parent, Span(0, 64 * MiB)), Is.EqualTo(before));
        AssertOriginal(Parent, area);
        WriteU64(Parent, area, 5); // W comes back through copy-on-write: the area is RW again
        Assert.That(ReadU64(Parent, area), Is.EqualTo(5UL));
        AssertFault(TryRead(Parent, added, new byte[8]), added, PageFaultKind.NotPresent);
    }

    [Test]
    public void Instances_equal_the_snapshot_share_its_frames_and_do_not_see_each_others_writes()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        long frames = Pool.FramesInUse;
        AddressSpace a = Track(snapshot.Instantiate());
        AddressSpace b = Track(snapshot.Instantiate());
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "instances copy nothing");
        Assert.That(a.Areas, Is.EqualTo(snapshot.Areas));

        WriteU64(a, area, 111);
        WriteU64(b, area, 222);
        WriteU64(Parent, area, 333);

        Assert.That(ReadU64(a, area), Is.EqualTo(111UL));
        Assert.That(ReadU64(b, area), Is.EqualTo(222UL));
        AssertOriginal(Track(snapshot.Instantiate()), area);
        Assert.That(a.Reset(snapshot), Is.GreaterThan(0));
        AssertOriginal(a, area);
        AssertHostMirrors(a, b, Parent);
    }

    [Test]
    public void A_disposed_snapshot_leaves_its_instances_working_and_its_frames_go_with_the_last_user()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        AddressSpace instance = Track(snapshot.Instantiate());
        snapshot.Dispose();
        Assert.That(snapshot.IsDisposed, Is.True);
        AssertOriginal(instance, area);
        WriteU64(instance, area, 5);
        Assert.That(ReadU64(Parent, area), Is.EqualTo(1000UL));
        Assert.Throws<ObjectDisposedException>(() => snapshot.Instantiate());
        Assert.Throws<ObjectDisposedException>(() => Parent.Reset(snapshot));
        snapshot.Dispose(); // a second call does nothing
    }

    [Test]
    public void Reset_to_another_snapshot_compares_what_either_maps()
    {
        (ulong area, VmSnapshot first) = Prepared(Parent);
        WriteU64(Parent, area, 42);
        Parent.Unmap(Span(area + 60 * Page, 4 * Page));
        VmSnapshot second = Track(Parent.Snapshot());
        AddressSpace other = Track(first.Instantiate());

        other.Reset(second);

        Assert.That(ReadU64(other, area), Is.EqualTo(42UL));
        Assert.That(other.Areas, Is.EqualTo(second.Areas));
        AssertFault(TryRead(other, area + 60 * Page, new byte[8]), area + 60 * Page, PageFaultKind.NotPresent);
        other.Reset(first);
        AssertOriginal(other, area);
    }

    [Test]
    public void Bad_snapshots_are_refused_with_a_specific_error_and_change_nothing()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        WriteU64(Parent, area, 9);
        List<string> before = Snapshot(Parent, Span(0, 64 * MiB));
        AddressSpace small = Track(new AddressSpace(new VmSpaceOptions { Size = 16 * MiB, Pool = Pool }));
        using var otherPool = new UVm.Frames.FramePool(16 * MiB);
        AddressSpace foreign = Track(new AddressSpace(new VmSpaceOptions { Size = GiB, Pool = otherPool }));

        Assert.Throws<ArgumentNullException>(() => Parent.Reset(null!));
        Assert.That(Assert.Throws<ArgumentException>(() => small.Reset(snapshot))!.ParamName, Is.EqualTo("snapshot"));
        Assert.That(Assert.Throws<ArgumentException>(() => foreign.Reset(snapshot))!.ParamName, Is.EqualTo("snapshot"));
        foreign.Dispose();
        Assert.That(Snapshot(Parent, Span(0, 64 * MiB)), Is.EqualTo(before));
        Assert.That(ReadU64(Parent, area), Is.EqualTo(9UL));

        AddressSpace gone = Track(snapshot.Instantiate());
        gone.Dispose();
        Assert.Throws<ObjectDisposedException>(() => gone.Reset(snapshot));
        Assert.Throws<ObjectDisposedException>(() => gone.Snapshot());
    }

    [Test]
    public void A_reset_the_host_refuses_leaves_the_space_exactly_as_it_was_and_a_later_one_completes()
    {
        AddressSpace Parent = NewAddressSpaceWithoutHostCopies(); // UVm's own copies, through faults
        Parent.FaultAroundPages = 1;
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        for (ulong i = 0; i < 8; i++) WriteU64(Parent, area + i * 2 * Page, 50 + i);
        List<string> before = Snapshot(Parent, Span(0, 64 * MiB));

        using (HostRefusal.Scope refusal = HostRefusal.Arm(HostCallSite.Mmap, 12 /* ENOMEM */, count: 1))
        {
            Assert.That(Assert.Throws<UVmException>(() => Parent.Reset(snapshot))!.Error, Is.EqualTo(UVmError.HostNoMemory));
            Assert.That(refusal.Refused, Is.EqualTo(1), "precondition: the host refused the reset's mapping");
        }
        Assert.That(Snapshot(Parent, Span(0, 64 * MiB)), Is.EqualTo(before));
        AssertHostMirrors(Parent);
        for (ulong i = 0; i < 8; i++) Assert.That(ReadU64(Parent, area + i * 2 * Page), Is.EqualTo(50 + i));

        Assert.That(Parent.Reset(snapshot), Is.EqualTo(8));
        AssertOriginal(Parent, area);
    }

    [Test]
    public void A_reset_racing_writes_on_another_thread_waits_for_them_and_is_never_torn()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        var failures = new List<string>();
        using var stop = new CancellationTokenSource();
        Thread writer = Deadlines.Background("writer", () =>
        {
            Parent.Space.Activate();
            ulong round = 0;
            while (!stop.IsCancellationRequested)
            {
                ulong page = round++ % AreaPages;
                UVm.Io.CopyResult r = TryWrite(Parent, area + page * Page, BitConverter.GetBytes(5000 + page));
                if (!r.IsOk) lock (failures) failures.Add($"write of page {page}: {r.Error} {r.Fault}");
            }
            VmSpace.Deactivate();
        });
        writer.Start();
        for (int i = 0; i < 200; i++) Parent.Reset(snapshot);
        stop.Cancel();
        Deadlines.Join(writer, "the writer");
        Assert.That(failures, Is.Empty, "every write succeeded: a reset never leaves an area half there");
        for (ulong i = 0; i < AreaPages; i++)
        {
            ulong v = ReadU64(Parent, area + i * Page);
            Assert.That(v == 1000 + i || v == 5000 + i, $"page {i} holds {v}: either the snapshot's or the writer's");
        }
        Parent.Reset(snapshot);
        AssertOriginal(Parent, area);
    }
}
