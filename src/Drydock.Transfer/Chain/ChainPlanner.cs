using Drydock.Repository.Format;

namespace Drydock.Transfer.Chain;

/// <summary>
/// The chain logic, pure: which level each disk gets, why a disk falls back to full, which checkpoints to repair before a
/// capture and which to delete after a commit. No IO; the later ChainGrain owns the same calls.
/// </summary>
public static class ChainPlanner
{
    /// <summary>Plans a backup.</summary>
    /// <param name="input">Request, domain state and lineage.</param>
    /// <returns>The plan.</returns>
    /// <exception cref="TransferRequestException">A target is unknown, or a disk cannot do the requested level and fallback is off.</exception>
    public static ChainPlan Plan(ChainPlanInput input) => throw new NotSupportedException("skeleton");

    /// <summary>The committed points' chain view of a manifest.</summary>
    /// <param name="manifest">A committed point's manifest.</param>
    /// <returns>The chain point.</returns>
    public static ChainPoint FromManifest(PointManifest manifest) => throw new NotSupportedException("skeleton");

    /// <summary>
    /// Drydock's checkpoints the chain still needs once these points are committed: per disk, the newest point's checkpoint
    /// (base of the next incremental) and the newest full's (base of the next differential).
    /// </summary>
    /// <param name="points">Committed points, oldest first.</param>
    /// <returns>Checkpoint names.</returns>
    public static IReadOnlySet<string> CheckpointsToKeep(IReadOnlyList<ChainPoint> points) => throw new NotSupportedException("skeleton");
}
