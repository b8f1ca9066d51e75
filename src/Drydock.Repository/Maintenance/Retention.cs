using System.Globalization;

namespace Drydock.Repository.Maintenance;

/// <summary>
/// How many points to keep, per domain. Zero means "no rule of this kind"; a policy needs at least one rule (pruning
/// with none would keep only the newest point of every domain, so <see cref="BackupRepository.PruneAsync"/> refuses it:
/// say <c>KeepLast = 1</c> when that is what is meant).
/// </summary>
public sealed record RetentionPolicy
{
    /// <summary>Keep the newest N points. Default 0.</summary>
    public int KeepLast { get; init; }

    /// <summary>Keep the newest point of each of the last N hours that have one. Default 0.</summary>
    public int KeepHourly { get; init; }

    /// <summary>Keep the newest point of each of the last N days (UTC) that have one. Default 0.</summary>
    public int KeepDaily { get; init; }

    /// <summary>Keep the newest point of each of the last N ISO weeks that have one. Default 0.</summary>
    public int KeepWeekly { get; init; }

    /// <summary>Keep the newest point of each of the last N months that have one. Default 0.</summary>
    public int KeepMonthly { get; init; }

    /// <summary>Keep the newest point of each of the last N years that have one. Default 0.</summary>
    public int KeepYearly { get; init; }

    /// <summary>Whether at least one rule is set.</summary>
    public bool HasRules => KeepLast > 0 || KeepHourly > 0 || KeepDaily > 0 || KeepWeekly > 0 || KeepMonthly > 0 || KeepYearly > 0;

    /// <summary>Checks that the policy has a rule and no negative count.</summary>
    /// <exception cref="ArgumentException">No rule is set, or a count is negative.</exception>
    public void Validate()
    {
        if (KeepLast < 0 || KeepHourly < 0 || KeepDaily < 0 || KeepWeekly < 0 || KeepMonthly < 0 || KeepYearly < 0)
        {
            throw new ArgumentException("Retention counts cannot be negative.");
        }

        if (!HasRules)
        {
            throw new ArgumentException(
                "A retention policy needs at least one rule (KeepLast, KeepHourly, KeepDaily, KeepWeekly, KeepMonthly or KeepYearly): "
                + "without one every point but the newest would be removed. Use KeepLast = 1 if that is intended.");
        }
    }
}

/// <summary>A point as retention sees it.</summary>
/// <param name="Point">The point.</param>
/// <param name="CreatedAt">Its capture time.</param>
/// <param name="Protected">Whether an operator protected it.</param>
/// <param name="VerifiedGood">Whether the newest verify run that covered it found it intact.</param>
public sealed record RetentionCandidate(PointRef Point, DateTimeOffset CreatedAt, bool Protected, bool VerifiedGood);

/// <summary>The pure retention decision (no IO): which points of one domain to keep, and why.</summary>
public static class Retention
{
    /// <summary>Decides per point. The newest point is always kept (it is the next incremental's base), protected
    /// points are kept, and so is the newest point verify found good (F39: a flood of newer points cannot push out
    /// the last known-good one). Buckets follow the usual "newest point of each period" rule, newest first.</summary>
    /// <param name="points">One domain's readable points.</param>
    /// <param name="policy">The policy.</param>
    /// <returns>For each point, the reasons to keep it (empty: remove it).</returns>
    public static Dictionary<PointRef, List<string>> Decide(IReadOnlyList<RetentionCandidate> points, RetentionPolicy policy)
    {
        var ordered = points.OrderByDescending(p => p.Point.Sequence).ToList();
        var reasons = ordered.ToDictionary(p => p.Point, _ => new List<string>());
        if (ordered.Count == 0)
        {
            return reasons;
        }

        reasons[ordered[0].Point].Add("newest (base of the next incremental)");
        foreach (var p in ordered.Where(p => p.Protected))
        {
            reasons[p.Point].Add("protected");
        }

        if (ordered.FirstOrDefault(p => p.VerifiedGood) is { } good)
        {
            reasons[good.Point].Add("newest verified good point");
        }

        for (var i = 0; i < Math.Min(policy.KeepLast, ordered.Count); i++)
        {
            reasons[ordered[i].Point].Add("keep-last");
        }

        Bucket(ordered, policy.KeepHourly, "hourly", t => t.ToString("yyyy-MM-dd HH", CultureInfo.InvariantCulture), reasons);
        Bucket(ordered, policy.KeepDaily, "daily", t => t.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), reasons);
        Bucket(ordered, policy.KeepWeekly, "weekly", t => string.Create(CultureInfo.InvariantCulture, $"{ISOWeek.GetYear(t.UtcDateTime)}-W{ISOWeek.GetWeekOfYear(t.UtcDateTime):D2}"), reasons);
        Bucket(ordered, policy.KeepMonthly, "monthly", t => t.ToString("yyyy-MM", CultureInfo.InvariantCulture), reasons);
        Bucket(ordered, policy.KeepYearly, "yearly", t => t.ToString("yyyy", CultureInfo.InvariantCulture), reasons);
        return reasons;
    }

    private static void Bucket(List<RetentionCandidate> newestFirst, int count, string rule, Func<DateTimeOffset, string> period, Dictionary<PointRef, List<string>> reasons)
    {
        if (count <= 0)
        {
            return;
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in newestFirst)
        {
            var key = period(p.CreatedAt.ToUniversalTime());
            if (seen.Add(key))
            {
                reasons[p.Point].Add($"{rule} {key}");
                if (seen.Count == count)
                {
                    return;
                }
            }
        }
    }
}
