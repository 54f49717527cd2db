using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;

namespace UVm.Tests.Areas;

/// <summary>
/// Eager population: a populated area gets all its frames when mapped, and
/// <see cref="AddressSpace.Prefault"/> resolves every page of a range for an access now, so
/// later accesses take no fault at all.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(60_000)]
public sealed class PrefaultAndPopulate : AreaFixture
{
    private const ulong A = 8 * MiB;

    [Test]
    public void A_populated_area_maps_every_page_at_once()
    {
        ulong va = Parent.Map(64 * Page, Populated, At(A));

        Assert.That(Pool.FramesInUse, Is.EqualTo(64));
        Assert.That(Pages(Parent, Span(va, 64 * Page)).Count, Is.EqualTo(64));
        AssertHostMirrors(Parent);

        var faults = Faults(Parent);
        Assert.That(Read(Parent, va, (int)(64 * Page)), Is.EqualTo(new byte[64 * Page]), "zeroed");
        Write(Parent, va, Filled(8, (int)(64 * Page)));
        Assert.That(Faults(Parent), Is.EqualTo(faults), "no fault of any kind on access");
        Assert.That(Parent.Stats.DemandZeroFaults, Is.Zero);
    }

    [Test]
    public void A_populated_area_is_contiguous_on_the_host()
    {
        Parent.Map(Huge, Populated, At(Huge));

        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3), "reserved, the area, reserved");
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Prefault_for_write_resolves_every_page()
    {
        ulong va = MapLazy(Parent, 40);

        Parent.Prefault(Span(va, 40 * Page), PageFaultAccess.Write);

        Assert.That(Pages(Parent, Span(va, 40 * Page)).Values.Select(p => p.Flags), Has.Exactly(40).EqualTo(PageFlags.RW));
        AssertHostMirrors(Parent);
        var faults = Faults(Parent);
        Write(Parent, va, Filled(1, (int)(40 * Page)));
        Assert.That(Read(Parent, va, (int)(40 * Page)), Is.EqualTo(Filled(1, (int)(40 * Page))));
        Assert.That(Faults(Parent), Is.EqualTo(faults), "no fault on access");
    }

    [Test]
    public void Prefault_of_part_of_an_area_resolves_only_that_part()
    {
        ulong va = MapLazy(Parent, 64);

        Parent.Prefault(Span(va + 20 * Page, 3 * Page), PageFaultAccess.Read);

        Assert.That(Pages(Parent, Span(va, 64 * Page)).Keys.Order(),
            Is.EqualTo(Enumerable.Range(16, 16).Select(i => va + (ulong)i * Page)), "the fault-around window of the pages asked for");
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Prefault_for_write_after_a_fork_copies_every_shared_page()
    {
        ulong va = MapLazy(Parent, 16);
        Write(Parent, va, Filled(6, (int)(16 * Page)));
        AddressSpace child = ForkOf(Parent);

        child.Prefault(Span(va, 16 * Page), PageFaultAccess.Write);

        Assert.That(child.Stats.CopyOnWritePages, Is.EqualTo(16));
        Assert.That(Pages(child, Span(va, 16 * Page)).Values.Select(p => (p.Flags, p.References)), Has.All.EqualTo((PageFlags.RW, 1)));
        AssertHostMirrors(Parent, child);
        var faults = Faults(child);
        Write(child, va, Filled(7, (int)(16 * Page)));
        Assert.That(Faults(child), Is.EqualTo(faults));
        Assert.That(Read(Parent, va, (int)(16 * Page)), Is.EqualTo(Filled(6, (int)(16 * Page))));
    }

    [Test]
    public void Prefault_for_read_after_a_fork_keeps_pages_shared()
    {
        ulong va = MapLazy(Parent, 16);
        Write(Parent, va, Filled(6, (int)(16 * Page)));
        AddressSpace child = ForkOf(Parent);
        long frames = Pool.FramesInUse;

        child.Prefault(Span(va, 16 * Page), PageFaultAccess.Read);

        Assert.That(Pool.FramesInUse, Is.EqualTo(frames));
        Assert.That(Pages(child, Span(va, 16 * Page)).Values.Select(p => p.References), Has.All.EqualTo(2));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void Prefault_outside_an_area_fails_with_page_fault()
    {
        ulong va = MapLazy(Parent, 4);

        var e = Assert.Throws<UVmException>(() => Parent.Prefault(Span(va + 4 * Page, Page), PageFaultAccess.Read));
        Assert.That(e!.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(Pool.FramesInUse, Is.Zero);
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Prefault_past_the_end_of_an_area_resolves_up_to_it_then_fails()
    {
        ulong va = MapLazy(Parent, 4);

        var e = Assert.Throws<UVmException>(() => Parent.Prefault(Span(va, 8 * Page), PageFaultAccess.Write));

        Assert.That(e!.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(e.Message, Does.Contain($"0x{va + 4 * Page:x}"), "names the first page that cannot be resolved");
        Assert.That(Pages(Parent, Span(va, 8 * Page)).Count, Is.EqualTo(4));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Prefault_for_write_of_a_read_only_area_fails_with_page_fault()
    {
        ulong va = MapLazy(Parent, 4, PageFlags.R);

        var e = Assert.Throws<UVmException>(() => Parent.Prefault(Span(va, 4 * Page), PageFaultAccess.Write));
        Assert.That(e!.Error, Is.EqualTo(UVmError.PageFault));

        Parent.Prefault(Span(va, 4 * Page), PageFaultAccess.Read);
        Assert.That(Pages(Parent, Span(va, 4 * Page)).Values.Select(p => p.Flags), Has.All.EqualTo(PageFlags.R));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Prefault_of_pages_already_resolved_does_nothing()
    {
        ulong va = Parent.Map(8 * Page, Populated, At(A));
        string before = string.Join("\n", Snapshot(Parent, Span(va, 8 * Page)));
        var faults = Faults(Parent);

        Parent.Prefault(Span(va, 8 * Page), PageFaultAccess.Write);

        Assert.That(string.Join("\n", Snapshot(Parent, Span(va, 8 * Page))), Is.EqualTo(before));
        Assert.That(Faults(Parent), Is.EqualTo(faults));
        AssertHostMirrors(Parent);
    }
}
