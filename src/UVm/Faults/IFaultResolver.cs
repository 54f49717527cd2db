namespace UVm.Faults;

/// <summary>
/// What a space's faults are resolved by: the space behind fallible readers and writers, for
/// <see cref="FaultResolution"/>. Says what resolving a fault means for the space (its policy);
/// the loop around it (retries, their bound, giving up) is <see cref="FaultResolution"/>'s.
/// Keeps <c>Io/</c> free of any knowledge of spaces.
/// </summary>
internal interface IFaultResolver
{
    /// <summary>Host address of guest address 0.</summary>
    nint HostBase { get; }

    /// <summary>End of the guest range: host addresses <c>[HostBase, HostBase + Size)</c> are the space's arena.</summary>
    ulong Size { get; }

    /// <summary>
    /// Tries to make the faulting access possible; true when it should be retried. The fault is
    /// inside the space, in guest terms; <paramref name="fault"/>'s kind is updated to what the
    /// space finds (absent or protected). A false counts as unresolved with the space.
    /// </summary>
    /// <exception cref="Exception">Whatever the space's page-fault handler throws: it propagates out of the access.</exception>
    bool Resolve(ref PageFaultInfo fault);

    /// <summary>
    /// Counts as unresolved a fault the caller gives up on without <see cref="Resolve"/> deciding:
    /// one outside the arena, or one that keeps recurring after <see cref="Resolve"/> claimed to
    /// resolve it.
    /// </summary>
    void GiveUp(in PageFaultInfo fault);
}
