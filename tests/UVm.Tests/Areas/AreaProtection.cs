using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Io;

namespace UVm.Tests.Areas;

/// <summary>
/// <see cref="AddressSpace.Protect"/>: an area's flags are the most its pages may have. Removing
/// a right takes effect at once, on the host too; giving W back to private pages happens on
/// their next write fault, which still copies a page shared with a forked space.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(60_000)]
public sealed class AreaProtection : AreaFixture
{
    private const ulong A = 8 * MiB;

    private void EightWrittenPages()
    {
        Parent.Map(8 * Page, Lazy, At(A));
        Write(Parent, A, Filled(0x42, (int)(8 * Page)));
    }

    [Test]
    public void Removing_W_makes_writes_fault_and_giving_it_back_makes_them_work_again()
    {
        EightWrittenPages();

        Parent.Protect(Span(A, 8 * Page), PageFlags.R);

        AssertHostMirrors(Parent);
        Assert.That(Parent.Areas.Single().Flags, Is.EqualTo(PageFlags.R));
        Assert.That(Pages(Parent, Span(A, 8 * Page)).Values.Select(p => p.Flags), Is.All.EqualTo(PageFlags.R));
        AssertFault(TryWrite(Parent, A + 2 * Page, Filled(1, 8)), A + 2 * Page, PageFaultKind.Protection);
        Assert.That(Read(Parent, A, (int)(8 * Page)), Is.EqualTo(Filled(0x42, (int)(8 * Page))), "reads still work, nothing was written");

        Parent.Protect(Span(A, 8 * Page), PageFlags.RW);

        AssertHostMirrors(Parent);
        Write(Parent, A + 2 * Page, Filled(1, 8));
        Assert.That(Read(Parent, A + 2 * Page, 8), Is.EqualTo(Filled(1, 8)));
        Assert.That(Parent.Stats.CopyOnWriteTakeovers, Is.EqualTo(1), "W came back on the write fault, the frame unshared");
        Assert.That(Parent.Stats.CopyOnWriteCopies, Is.Zero);
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Protecting_part_of_an_area_splits_it()
    {
        EightWrittenPages();

        Parent.Protect(Span(A + 2 * Page, 3 * Page), PageFlags.R);

        Assert.That(Parent.Areas, Is.EqualTo(new[]
        {
            new VmArea(Span(A, 2 * Page), PageFlags.RW, Lazy),
            new VmArea(Span(A + 2 * Page, 3 * Page), PageFlags.R, Lazy),
            new VmArea(Span(A + 5 * Page, 3 * Page), PageFlags.RW, Lazy),
        }));
        Write(Parent, A + Page, Filled(1, 8));
        Write(Parent, A + 5 * Page, Filled(1, 8));
        AssertFault(TryWrite(Parent, A + 4 * Page, Filled(1, 8)), A + 4 * Page, PageFaultKind.Protection);
        CopyResult across = TryWrite(Parent, A + 2 * Page - 4, Filled(7, 8));
        AssertFault(across, A + 2 * Page, PageFaultKind.Protection, bytesDone: 4);
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Removing_every_right_makes_reads_fault_too()
    {
        EightWrittenPages();

        Parent.Protect(Span(A, 8 * Page), PageFlags.None);

        AssertFault(TryRead(Parent, A, new byte[8]), A, PageFaultKind.Protection);
        AssertHostMirrors(Parent);

        Parent.Protect(Span(A, 8 * Page), PageFlags.R);
        Assert.That(Read(Parent, A, 8), Is.EqualTo(Filled(0x42, 8)));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Untouched_pages_of_a_protected_lazy_area_come_in_with_the_new_rights()
    {
        Parent.Map(8 * Page, Lazy, At(A));
        Parent.Protect(Span(A, 8 * Page), PageFlags.R);

        Assert.That(Read(Parent, A, 8), Is.EqualTo(new byte[8]));
        Assert.That(PageAt(Parent, A)!.Value.Flags, Is.EqualTo(PageFlags.R));
        AssertFault(TryWrite(Parent, A, Filled(1, 8)), A, PageFaultKind.Protection);
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Giving_W_back_after_a_fork_still_copies_shared_pages()
    {
        EightWrittenPages();
        AddressSpace child = ForkOf(Parent);

        Parent.Protect(Span(A, 8 * Page), PageFlags.R);
        Parent.Protect(Span(A, 8 * Page), PageFlags.RW);
        Assert.That(Pages(Parent, Span(A, 8 * Page)).Values.Select(p => p.Flags), Is.All.EqualTo(PageFlags.R), "shared pages stay write-protected");
        AssertHostMirrors(Parent, child);

        Write(Parent, A, Filled(9, (int)(8 * Page)));

        Assert.That(Read(child, A, (int)(8 * Page)), Is.EqualTo(Filled(0x42, (int)(8 * Page))), "the child does not see the parent's writes");
        Assert.That(Parent.Stats.CopyOnWritePages, Is.EqualTo(8), "every shared page copied once (by its own fault or its window's)");
        Assert.That(Parent.Stats.CopyOnWriteTakeoverPages, Is.Zero);
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void A_child_may_make_writable_what_it_inherited_read_only()
    {
        Parent.Map(4 * Page, Lazy, At(A, PageFlags.R));
        Read(Parent, A, (int)(4 * Page));
        AddressSpace child = ForkOf(Parent);

        child.Protect(Span(A, 4 * Page), PageFlags.RW);
        Write(child, A, Filled(3, (int)(4 * Page)));

        Assert.That(Read(Parent, A, (int)(4 * Page)), Is.EqualTo(new byte[4 * Page]));
        AssertFault(TryWrite(Parent, A, Filled(1, 8)), A, PageFaultKind.Protection);
        Assert.That(Parent.Areas.Single().Flags, Is.EqualTo(PageFlags.R), "areas are per space");
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void Protecting_a_linear_area_changes_its_pages_at_once()
    {
        using var segment = Pool.AllocSegment(4);
        Parent.Map(4 * Page, new AreaBackend.LinearFrames(segment, 0), At(A));

        Parent.Protect(Span(A, 4 * Page), PageFlags.R);
        AssertFault(TryWrite(Parent, A, Filled(1, 8)), A, PageFaultKind.Protection);

        Parent.Protect(Span(A, 4 * Page), PageFlags.RW);
        Assert.That(Pages(Parent, Span(A, 4 * Page)).Values.Select(p => p.Flags), Is.All.EqualTo(PageFlags.RW));
        var faults = Faults(Parent);
        Write(Parent, A, Filled(1, 8));
        Assert.That(Faults(Parent), Is.EqualTo(faults), "shared pages need no fault to write");
        AssertHostMirrors(Parent);
        Parent.Clear();
    }

    [Test]
    public void Protect_over_holes_changes_only_the_areas()
    {
        Parent.Map(2 * Page, Lazy, At(A));
        Parent.Map(2 * Page, Lazy, At(A + 4 * Page));

        Parent.Protect(Span(A - 4 * Page, 16 * Page), PageFlags.R);

        Assert.That(Parent.Areas.Select(a => (a.Range, a.Flags)), Is.EqualTo(new[]
        {
            (Span(A, 2 * Page), PageFlags.R),
            (Span(A + 4 * Page, 2 * Page), PageFlags.R),
        }));
        AssertFault(TryRead(Parent, A + 2 * Page, new byte[1]), A + 2 * Page, PageFaultKind.NotPresent);
        AssertHostMirrors(Parent);
    }
}
