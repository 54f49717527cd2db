using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Tests.Areas;

namespace UVm.Tests.Snapshots;

/// <summary>Snapshots, resets and the write watch over image, on-demand and guard areas.</summary>
[NonParallelizable]
public sealed class SnapshotBackends : AreaFixture
{
    [Test]
    public void An_instance_has_the_image_the_fills_and_the_guard_of_its_snapshot_and_a_reset_forgets_later_fills()
    {
        using VmImage image = VmImage.FromBytes(Enumerable.Range(0, 3 * (int)Page).Select(i => (byte)(i / (int)Page + 1)).ToArray(), Pool);
        int fills = 0;
        ulong code = Parent.Map(3 * Page, new AreaBackend.Image(image, 0), At(2 * MiB, PageFlags.RW));
        ulong guard = Parent.Map(Page, new AreaBackend.Guard(), At(4 * MiB, PageFlags.None));
        ulong heap = Parent.Map(8 * Page, new AreaBackend.OnDemand((va, page) =>
        {
            Interlocked.Increment(ref fills);
            page.Fill((byte)(va >> 12));
            return true;
        }), At(6 * MiB));
        Read(Parent, heap, 8); // one page filled before the snapshot
        Assert.That(fills, Is.EqualTo(1), "precondition: one fill");
        VmSnapshot snapshot = Track(Parent.Snapshot());
        AddressSpace instance = Track(snapshot.Instantiate());

        Assert.That(Read(instance, code + Page, 4), Is.EqualTo(new byte[] { 2, 2, 2, 2 }));
        Assert.That(Read(instance, heap, 2), Is.EqualTo(new byte[] { (byte)(heap >> 12), (byte)(heap >> 12) }));
        AssertFault(TryRead(instance, guard + 8, new byte[8]), guard + 8, PageFaultKind.Guard);
        Assert.That(fills, Is.EqualTo(1), "the filled page came with the snapshot");

        Write(instance, code, new byte[] { 9 });
        Read(instance, heap + 5 * Page, 8);
        Assert.That(fills, Is.EqualTo(2));
        instance.Reset(snapshot);

        Assert.That(Read(instance, code, 1), Is.EqualTo(new byte[] { 1 }), "the image page is the image's again");
        Assert.That(Read(Parent, code, 1), Is.EqualTo(new byte[] { 1 }));
        Read(instance, heap + 5 * Page, 8);
        Assert.That(fills, Is.EqualTo(3), "a page filled after the snapshot is filled again after the reset");
        AssertFault(TryRead(instance, guard, new byte[1]), guard, PageFaultKind.Guard);
    }

    [Test]
    public void A_page_filled_on_a_read_is_not_written_and_its_first_write_is_listed()
    {
        ulong heap = Parent.Map(8 * Page, new AreaBackend.OnDemand((_, page) => { page.Fill(1); return true; }), At(2 * MiB));
        Parent.ResetWriteWatch(Span(heap, 8 * Page));
        Read(Parent, heap + Page, 8);
        Assert.That(Parent.WrittenPages(Span(heap, 8 * Page)), Is.Empty);
        WriteU64(Parent, heap + Page, 5);
        WriteU64(Parent, heap + 3 * Page, 6); // filled by the write itself
        Assert.That(Parent.WrittenPages(Span(heap, 8 * Page)), Is.EqualTo(new[] { heap + Page, heap + 3 * Page }));
    }

    [Test]
    public void A_write_whose_fill_throws_is_not_listed_as_written()
    {
        bool fail = true;
        ulong heap = Parent.Map(4 * Page, new AreaBackend.OnDemand((_, page) => fail ? throw new IOException("backing store gone") : true), At(2 * MiB));
        Parent.ResetWriteWatch(Span(heap, 4 * Page));
        Assert.Throws<IOException>(() => TryWrite(Parent, heap, new byte[] { 1 }));
        Assert.That(Parent.WrittenPages(Span(heap, 4 * Page)), Is.Empty, "the write never happened");
        fail = false;
        Write(Parent, heap, new byte[] { 1 });
        Assert.That(Parent.WrittenPages(Span(heap, 4 * Page)), Is.EqualTo(new[] { heap }));
    }

    [Test]
    public void Areas_added_over_a_guard_after_the_snapshot_are_gone_after_a_reset_and_the_guard_is_back()
    {
        ulong guard = Parent.Map(4 * Page, new AreaBackend.Guard(), At(2 * MiB, PageFlags.None));
        VmSnapshot snapshot = Track(Parent.Snapshot());
        Parent.Map(4 * Page, Populated, At(guard, overwrite: true));
        WriteU64(Parent, guard, 1);

        Parent.Reset(snapshot);

        Assert.That(Parent.Areas, Is.EqualTo(snapshot.Areas));
        AssertFault(TryRead(Parent, guard + Page, new byte[8]), guard + Page, PageFaultKind.Guard);
    }
}
