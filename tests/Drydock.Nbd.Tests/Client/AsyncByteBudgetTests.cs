using Drydock.Nbd.Client;
using Xunit;

namespace Drydock.Nbd.Tests.Client;

public sealed class AsyncByteBudgetTests
{
    // Guards against a hang, never asserts a duration: a lost wake-up shows as a failed test, not a stuck run.
    private const int HangGuard = 60_000;

    private static CancellationToken None => CancellationToken.None;

    [Fact]
    public void Requests_within_the_budget_complete_at_once_and_are_charged()
    {
        var budget = new AsyncByteBudget(100);

        var first = budget.WaitAsync(60, None);
        var second = budget.WaitAsync(40, None);

        Assert.True(first.IsCompletedSuccessfully);
        Assert.True(second.IsCompletedSuccessfully);
        Assert.Equal(0, budget.Available);
        budget.Release(60);
        Assert.Equal(60, budget.Available);
    }

    [Fact(Timeout = HangGuard)]
    public async Task Waiters_are_served_in_arrival_order_and_none_overtakes_a_blocked_head()
    {
        var budget = new AsyncByteBudget(100);
        await budget.WaitAsync(100, None);

        var a = budget.WaitAsync(60, None).AsTask();
        var b = budget.WaitAsync(30, None).AsTask();
        var c = budget.WaitAsync(50, None).AsTask();
        var d = budget.WaitAsync(10, None).AsTask();
        budget.Release(100);

        // 60 + 30 fit; c (50) does not fit in the 10 left, and d (10) would fit but must wait behind c.
        await Task.WhenAll(a, b);
        Assert.False(c.IsCompleted);
        Assert.False(d.IsCompleted);
        Assert.Equal(10, budget.Available);

        // A newcomer that would fit also queues behind them.
        var e = budget.WaitAsync(5, None).AsTask();
        Assert.False(e.IsCompleted);

        budget.Release(60);
        await Task.WhenAll(c, d, e);
        Assert.Equal(5, budget.Available);
    }

    [Fact(Timeout = HangGuard)]
    public async Task Request_larger_than_the_budget_takes_the_whole_budget()
    {
        var budget = new AsyncByteBudget(100);

        Assert.Equal(100, budget.Charge(1_000_000));
        await budget.WaitAsync(1_000_000, None);
        Assert.Equal(0, budget.Available);

        var small = budget.WaitAsync(1, None).AsTask();
        Assert.False(small.IsCompleted);
        budget.Release(1_000_000);
        await small;
        Assert.Equal(99, budget.Available);
    }

    [Fact(Timeout = HangGuard)]
    public async Task Oversized_request_waits_until_everything_is_given_back()
    {
        var budget = new AsyncByteBudget(100);
        await budget.WaitAsync(1, None);

        var big = budget.WaitAsync(500, None).AsTask();
        Assert.False(big.IsCompleted);

        budget.Release(1);
        await big;
        Assert.Equal(0, budget.Available);
    }

    [Fact(Timeout = HangGuard)]
    public async Task Cancelled_waiter_takes_nothing_and_leaves_the_queue()
    {
        var budget = new AsyncByteBudget(100);
        await budget.WaitAsync(100, None);
        using var cts = new CancellationTokenSource();

        var waiter = budget.WaitAsync(50, cts.Token).AsTask();
        var behind = budget.WaitAsync(100, None).AsTask();
        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiter);
        budget.Release(100);
        await behind; // only possible if the cancelled waiter's 50 were never taken
        Assert.Equal(0, budget.Available);
    }

    [Fact(Timeout = HangGuard)]
    public async Task Cancelling_the_head_waiter_wakes_the_smaller_ones_it_was_blocking()
    {
        var budget = new AsyncByteBudget(100);
        await budget.WaitAsync(80, None);
        using var cts = new CancellationTokenSource();

        var head = budget.WaitAsync(50, cts.Token).AsTask();
        var small1 = budget.WaitAsync(10, None).AsTask();
        var small2 = budget.WaitAsync(10, None).AsTask();
        var large = budget.WaitAsync(30, None).AsTask();
        Assert.False(small1.IsCompleted);

        // No Release happens: only the cancellation can let the small ones through.
        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => head);
        await Task.WhenAll(small1, small2);
        Assert.False(large.IsCompleted);
        Assert.Equal(0, budget.Available);
    }

    [Fact(Timeout = HangGuard)]
    public async Task Cancelling_a_waiter_in_the_middle_keeps_the_order_of_the_others()
    {
        var budget = new AsyncByteBudget(100);
        await budget.WaitAsync(100, None);
        using var cts = new CancellationTokenSource();

        var first = budget.WaitAsync(70, None).AsTask();
        var middle = budget.WaitAsync(20, cts.Token).AsTask();
        var last = budget.WaitAsync(40, None).AsTask();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => middle);

        budget.Release(100);
        await first;
        Assert.False(last.IsCompleted); // 30 left; last needs 40
        budget.Release(70);
        await last;
        Assert.Equal(60, budget.Available);
    }

    [Fact(Timeout = HangGuard)]
    public async Task Cancellation_after_the_bytes_were_granted_keeps_the_grant()
    {
        var budget = new AsyncByteBudget(100);
        await budget.WaitAsync(100, None);
        using var cts = new CancellationTokenSource();
        var waiter = budget.WaitAsync(40, cts.Token).AsTask();

        budget.Release(100);
        await waiter;
        await cts.CancelAsync();

        Assert.Equal(60, budget.Available);
    }

    [Fact(Timeout = HangGuard)]
    public async Task Already_cancelled_token_fails_a_wait_that_would_queue_and_queues_nothing()
    {
        var budget = new AsyncByteBudget(100);
        await budget.WaitAsync(100, None);

        var waiter = budget.WaitAsync(10, new CancellationToken(canceled: true)).AsTask();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiter);
        var next = budget.WaitAsync(100, None).AsTask();
        budget.Release(100);
        await next;
    }

    [Fact]
    public void Capacity_must_be_positive()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new AsyncByteBudget(0));
    }

    [Fact(Timeout = HangGuard)]
    public async Task Many_concurrent_takers_never_exceed_the_capacity_and_all_finish()
    {
        const long capacity = 1000;
        const int workers = 32;
        const int rounds = 200;
        var budget = new AsyncByteBudget(capacity);
        long inUse = 0;
        long peak = 0;
        var violations = 0;
        var cancelled = 0;

        async Task WorkAsync(int seed)
        {
            var random = new Random(seed);
            for (var round = 0; round < rounds; round++)
            {
                // Sizes from tiny to over the capacity; a quarter of the waits race a cancellation.
                var bytes = random.Next(1, 1500);
                using var cts = new CancellationTokenSource();
                var canceller = random.Next(4) == 0 ? Task.Run(cts.CancelAsync, TestContext.Current.CancellationToken) : Task.CompletedTask;
                try
                {
                    await budget.WaitAsync(bytes, cts.Token);
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref cancelled);
                    await canceller;
                    continue;
                }

                var charge = budget.Charge(bytes);
                var now = Interlocked.Add(ref inUse, charge);
                if (now > capacity)
                {
                    Interlocked.Increment(ref violations);
                }

                InterlockedMax(ref peak, now);
                await Task.Yield();
                Interlocked.Add(ref inUse, -charge);
                budget.Release(bytes);
                await canceller;
            }
        }

        var tasks = Enumerable.Range(0, workers).Select(seed => Task.Run(() => WorkAsync(seed), TestContext.Current.CancellationToken));

        await Task.WhenAll(tasks);

        Assert.Equal(0, violations);
        Assert.InRange(peak, 1, capacity);
        Assert.Equal(capacity, budget.Available);
        Assert.Equal(0, Interlocked.Read(ref inUse));
    }

    private static void InterlockedMax(ref long target, long value)
    {
        var current = Interlocked.Read(ref target);
        while (value > current)
        {
            var seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }
}
