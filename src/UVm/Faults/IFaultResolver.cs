using UVm.Interop;
namespace UVm.Faults;

/// <summary>
/// What fallible readers and writers call when a primitive faults: the guest space behind
/// them. Keeps <c>Io/</c> free of any knowledge of spaces.
/// </summary>
internal interface IFaultResolver
{
    /// <summary>Host address of guest address 0.</summary>
    nint HostBase { get; }

    /// <summary>Tries to make the faulting access possible; true when it should be retried.</summary>
    bool Resolve(in NativeFault fault, out PageFaultInfo info);

    /// <summary>
    /// Records that the caller gives up on a fault that <see cref="Resolve"/> claimed to resolve
    /// but that keeps recurring: it is then reported as unresolved (<paramref name="info"/>).
    /// </summary>
    void GiveUp(in PageFaultInfo info);
}
