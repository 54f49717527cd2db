using UVm.Interop;

namespace UVm.Faults;

/// <summary>
/// One access to guest memory made by a fault-recovering primitive (<see cref="NativeFaults"/>)
/// that can be tried again from where it stopped: what <see cref="FaultResolution"/> retries.
/// Implemented by structs, so the generic code over them is specialized and inlined.
/// </summary>
/// <remarks>
/// SAFETY: whoever makes an op proves that its memory (the guest bytes inside a checked range of
/// the space's arena, the library bytes pinned and valid) stays so for the whole access;
/// <see cref="Try"/> is called only inside the space's gate, entered while it was open.
/// </remarks>
internal unsafe interface IFallibleOp
{
    /// <summary>
    /// Does the rest of the access: true when all of it is done; false when it faulted, with the
    /// fault in <c>*fault</c> and <see cref="Done"/> moved over whatever was done before it.
    /// </summary>
    bool Try(NativeFault* fault);

    /// <summary>
    /// Bytes done so far: the exact prefix of a copy or fill; always 0 for a single load, store
    /// or compare-exchange, which is done whole or not at all.
    /// </summary>
    ulong Done { get; }
}
