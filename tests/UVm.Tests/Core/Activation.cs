using NUnit.Framework;
using UVm.Spaces;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Core;

/// <summary>Activation is per thread: the space that fallible access of the calling thread acts on.</summary>
[NonParallelizable]
public sealed class Activation : SpaceFixture
{
    [TearDown]
    public void DeactivateAll() => VmSpace.Deactivate();

    [Test]
    public void Activate_makes_the_space_current_on_the_calling_thread_only()
    {
        Space.Activate();
        Assert.That(VmSpace.Current, Is.SameAs(Space));
        Assert.That(Space.IsActiveOnCurrentThread, Is.True);

        VmSpace? seenElsewhere = Space;
        bool activeElsewhere = true;
        Deadlines.OnOtherThread(() => { seenElsewhere = VmSpace.Current; activeElsewhere = Space.IsActiveOnCurrentThread; }, "other thread");
        Assert.That(seenElsewhere, Is.Null);
        Assert.That(activeElsewhere, Is.False);
    }

    [Test]
    public void Activating_another_space_replaces_the_current_one()
    {
        VmSpace other = NewSpace(64 * MiB);
        Space.Activate();
        other.Activate();
        Assert.That(VmSpace.Current, Is.SameAs(other));
        Assert.That(Space.IsActiveOnCurrentThread, Is.False);
    }

    [Test]
    public void Deactivate_leaves_no_current_space()
    {
        Space.Activate();
        VmSpace.Deactivate();
        Assert.That(VmSpace.Current, Is.Null);
        Assert.That(Space.IsActiveOnCurrentThread, Is.False);
    }

    [Test]
    public void Disposing_the_active_space_deactivates_it()
    {
        VmSpace other = NewSpace(64 * MiB);
        other.Activate();
        other.Dispose();
        Assert.That(VmSpace.Current, Is.Null);
        Assert.That(other.IsActiveOnCurrentThread, Is.False);
    }
}
