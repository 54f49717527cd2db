using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.TestSupport;
using static UVm.Tests.Areas.GuestValues;

namespace UVm.Tests.Areas;

/// <summary>
/// The new backends attacked: faults racing the map, unmap and protect of the areas they hit,
/// a fill that faults on another space's guard, and state left unchanged by refusals.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(120_000)]
public sealed class HostileAreaBackends : AreaFixture
{
    [Test]
    public void Reads_racing_guard_areas_being_mapped_and_unmapped_see_only_guard_or_not_present()
    {
        ulong va = GiB / 2;
        using var stop = new ManualResetEventSlim();
        var kinds = new HashSet<PageFaultKind>();
        TestThread reader = TestThread.Start("reader", () =>
        {
            Parent.Space.Activate();
            for (int i = 0; i < 20_000 && !stop.IsSet; i++)
            {
                IoResult<ulong> r = ReadValOf<ulong>(Parent.Space, va + (ulong)(i % 4) * Page + 8, 8);
                Assert.That(r.IsOk, Is.False, "a guard area maps nothing");
                lock (kinds) kinds.Add(r.Fault!.Value.Kind);
                Assert.That(r.Fault.Value.Address, Is.EqualTo(va + (ulong)(i % 4) * Page + 8));
            }
        });
        for (int round = 0; round < 300; round++)
        {
            Parent.Map(4 * Page, new AreaBackend.Guard(), At(va));
            Parent.Protect(Span(va + Page, Page), PageFlags.None);
            Parent.Unmap(Span(va, 4 * Page));
        }
        stop.Set();
        reader.Join();
        Assert.That(kinds, Is.SubsetOf(new[] { PageFaultKind.Guard, PageFaultKind.NotPresent }));
        Assert.That(Pool.FramesInUse, Is.Zero);
        Assert.That(Parent.Stats.Refused + Parent.Stats.GuardFaults, Is.EqualTo(Parent.Space.UnresolvedFaults));
    }

    [Test]
    public void Fills_racing_the_unmap_of_their_area_leave_nothing_behind()
    {
        ulong va = GiB / 2;
        int fills = 0;
        var backend = new AreaBackend.OnDemand((p, page) => { Interlocked.Increment(ref fills); Thread.Yield(); page[0] = 1; return true; });
        using var stop = new ManualResetEventSlim();
        TestThread reader = TestThread.Start("reader", () =>
        {
            Parent.Space.Activate();
            for (int i = 0; i < 20_000 && !stop.IsSet; i++)
            {
                IoResult<byte> r = ReadValOf<byte>(Parent.Space, va + (ulong)(i % 8) * Page, 1);
                if (r.IsOk) Assert.That(r.Value, Is.EqualTo(1));
                else Assert.That(r.Fault!.Value.Kind, Is.EqualTo(PageFaultKind.NotPresent));
            }
        });
        for (int round = 0; round < 300; round++)
        {
            Parent.Map(8 * Page, backend, At(va));
            Thread.Yield();
            Parent.Unmap(Span(va, 8 * Page));
        }
        stop.Set();
        reader.Join();
        Pool.Trim();
        Assert.That(Pool.FramesInUse, Is.Zero);
        Assert.That(Parent.Stats.OnDemandFills, Is.LessThanOrEqualTo(fills));
    }

    [Test]
    public void A_fill_that_faults_on_another_spaces_guard_declines_and_reports_exactly()
    {
        AddressSpace other = NewAddressSpace();
        ulong guard = other.Map(Page, new AreaBackend.Guard(), Anywhere());
        PageFaultInfo? seen = null;
        ulong va = Parent.Map(Page, new AreaBackend.OnDemand((p, page) =>
        {
            other.Space.Activate();
            IoResult<ulong> r = ReadValOf<ulong>(other.Space, guard + 40, 8);
            Parent.Space.Activate();
            seen = r.Fault;
            return r.IsOk;
        }), Anywhere());

        AssertFault(TryRead(Parent, va + 3, new byte[4]), va + 3, PageFaultKind.NotPresent);
        Assert.That(seen, Is.EqualTo(new PageFaultInfo(guard + 40, PageFaultAccess.Read, PageFaultKind.Guard, 11)));
        Assert.That((Parent.Stats.OnDemandDeclined, other.Stats.GuardFaults), Is.EqualTo((1L, 1L)));
        Assert.That(Pool.FramesInUse, Is.Zero);
    }

    [Test]
    public void Refused_maps_of_every_new_backend_over_a_fixed_range_leave_the_space_as_it_was()
    {
        using VmImage image = VmImage.FromBytes(Filled(3, (int)Page), Pool);
        ulong lazy = MapLazy(Parent, 4);
        Write(Parent, lazy, [7]);
        List<string> before = Snapshot(Parent, Span(0, GiB));
        IReadOnlyList<VmArea> areas = Parent.Areas;
        long frames = Pool.FramesInUse;
        AreaBackend[] backends = [new AreaBackend.Guard(), new AreaBackend.OnDemand((p, page) => true), new AreaBackend.Image(image, 0)];

        foreach (AreaBackend b in backends)
        {
            Assert.That(Assert.Throws<UVmException>(() => Parent.Map(Page, b, At(lazy + Page)))!.Error, Is.EqualTo(UVmError.MapAlreadyMappedVaddr), b.ToString());
            Assert.That(Assert.Throws<UVmException>(() => Parent.Map(Page, b, At(GiB - Page + Page)))!.Error, Is.EqualTo(UVmError.InvalidArgs), b.ToString());
            Assert.Throws<ArgumentException>(() => Parent.Map(Page, b, At(lazy + 1)), b.ToString());
            Assert.Throws<ArgumentException>(() => Parent.Map(Page, b, new VmMapOptions { CanOverwrite = true }), b.ToString());
        }

        Assert.That(Snapshot(Parent, Span(0, GiB)), Is.EqualTo(before));
        Assert.That(Parent.Areas, Is.EqualTo(areas));
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames));
        Assert.That(Read(Parent, lazy, 1)[0], Is.EqualTo(7));
    }
}
