namespace Drydock.Hypervisor;

/// <summary>What a worker keeps when it reconciles a domain after a restart (FAULTS.md F03).</summary>
public sealed record ReconcilePlan
{
    /// <summary>The domain.</summary>
    public required string DomainId { get; init; }

    /// <summary>Captures still wanted (a job that survived the restart and resumes reading); every other is abandoned.</summary>
    public IReadOnlySet<string> KeepCaptures { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>
    /// Drydock checkpoints to keep (the committed ones in the chain's ledger, and those of kept captures); every other
    /// checkpoint with Drydock's prefix is deleted. Null leaves checkpoints alone. Foreign checkpoints are never touched.
    /// </summary>
    public IReadOnlySet<string>? KeepCheckpoints { get; init; }

    /// <summary>
    /// The chain whose checkpoints are reconciled (<see cref="DrydockNames.ChainTag"/> of its repository). When set, a
    /// Drydock checkpoint is deleted only if it carries this tag: another repository's chain of the same domain, and
    /// untagged names, are left alone. Null: every Drydock checkpoint not kept is deleted (one repository per domain).
    /// </summary>
    public string? ChainTag { get; init; }
}

/// <summary>What reconciliation did.</summary>
/// <param name="ReleasedCaptures">Captures abandoned and released.</param>
/// <param name="DeletedCheckpoints">Drydock checkpoints deleted.</param>
public sealed record ReconcileReport(IReadOnlyList<string> ReleasedCaptures, IReadOnlyList<string> DeletedCheckpoints);

/// <summary>Reconciliation over any driver: release orphan captures, delete orphan Drydock checkpoints.</summary>
public static class HypervisorReconciliation
{
    /// <summary>
    /// Releases (abandons) every capture of the domain not in <see cref="ReconcilePlan.KeepCaptures"/>, then deletes every
    /// Drydock checkpoint not in <see cref="ReconcilePlan.KeepCheckpoints"/> (when set). Safe to run again.
    /// </summary>
    /// <param name="driver">The driver of the domain's host.</param>
    /// <param name="plan">What to keep.</param>
    /// <param name="cancellationToken">Cancels the work between steps.</param>
    /// <returns>What was released and deleted.</returns>
    public static async Task<ReconcileReport> ReconcileAsync(this IHypervisorDriver driver, ReconcilePlan plan, CancellationToken cancellationToken = default)
    {
        var released = new List<string>();
        foreach (var capture in await driver.ListCapturesAsync(plan.DomainId, cancellationToken))
        {
            if (!plan.KeepCaptures.Contains(capture.Id)
                && await driver.ReleaseCaptureAsync(plan.DomainId, capture.Id, CaptureOutcome.Abandoned, cancellationToken))
            {
                released.Add(capture.Id);
            }
        }

        var deleted = new List<string>();
        if (plan.KeepCheckpoints is { } keep)
        {
            foreach (var checkpoint in await driver.ListCheckpointsAsync(plan.DomainId, cancellationToken))
            {
                if (checkpoint.IsOwned && !keep.Contains(checkpoint.Name)
                    && (plan.ChainTag is null || DrydockNames.ChainTagOf(checkpoint.Name) == plan.ChainTag))
                {
                    try
                    {
                        await driver.DeleteCheckpointAsync(plan.DomainId, checkpoint.Name, CheckpointDeleteMode.All, cancellationToken);
                        deleted.Add(checkpoint.Name);
                    }
                    catch (CheckpointNotFoundException)
                    {
                        // Gone meanwhile: nothing to do.
                    }
                }
            }
        }

        return new ReconcileReport(released, deleted);
    }
}
