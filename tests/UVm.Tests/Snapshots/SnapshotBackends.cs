using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Spaces;
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
    public void I_O_memory_is_captured_as_a_mapping_and_put_back_whole_by_a_reset_after_a_split_and_an_unmap()
    {
        IoMem io = IoMem.CreateAnonymous(4 * MiB);
        ulong area = Parent.Map(4 * MiB, new AreaBackend.LinearIoMem(io, 0), At(4 * MiB));
        WriteU64(Parent, area + 3 * MiB, 77);
        VmSnapshot snapshot = Track(Parent.Snapshot());
        io.Dispose(); // the snapshot and the space keep the region open
        AddressSpace instance = Track(snapshot.Instantiate());
        Assert.That(ReadU64(instance, area + 3 * MiB), Is.EqualTo(77UL), "the instance maps the same region");
        List<string> before = PageByPage(Snapshot(instance, Span(area, 4 * MiB)));

        instance.Protect(Span(area + Page, Page), PageFlags.R); // splits a 2 MiB entry
        instance.Unmap(Span(area + 2 * MiB, 2 * MiB));
        Assert.That(PageByPage(Snapshot(instance, Span(area, 4 * MiB))), Is.Not.EqualTo(before), "precondition: the mappings changed");
        instance.Reset(snapshot);

        Assert.That(instance.Areas, Is.EqualTo(snapshot.Areas));
        // The same address and rights on every page; the entry split by Protect stays split (4 KiB leaves).
        Assert.That(PageByPage(Snapshot(instance, Span(area, 4 * MiB))), Is.EqualTo(before), "every page maps what it mapped");
        WriteU64(instance, area + Page, 5);
        Assert.That(ReadU64(Parent, area + Page), Is.EqualTo(5UL), "shared memory: its writes are everybody's");
        Assert.That(ReadU64(instance, area + 3 * MiB), Is.EqualTo(77UL));
    }

    /// <summary>I/O slots described as "[start, end) io paddr rights" cut into one line per page, so a split entry reads as its pieces; holes as they are.</summary>
    private static List<string> PageByPage(List<string> slots)
    {
        var pages = new List<string>();
        foreach (string slot in slots)
        {
            var m = System.Text.RegularExpressions.Regex.Match(slot, @"^\[0x([0-9a-f]+), 0x([0-9a-f]+)\) io 0x([0-9a-f]+) (.*)$");
            if (!m.Success)
            {
                pages.Add(slot); // a hole
                continue;
            }
            ulong start = Convert.ToUInt64(m.Groups[1].Value, 16), end = Convert.ToUInt64(m.Groups[2].Value, 16), paddr = Convert.ToUInt64(m.Groups[3].Value, 16);
            for (ulong va = start; va < end; va += Page) pages.Add($"0x{va:x} io 0x{paddr + (va - start):x} {m.Groups[4].Value}");
        }
        return pages;
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
