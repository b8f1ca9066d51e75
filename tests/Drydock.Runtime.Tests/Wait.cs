namespace Drydock.Runtime.Tests;

/// <summary>Waits for a condition. The deadline is hang protection only; no test asserts on timing with it.</summary>
internal static class Wait
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    public static async Task<T> UntilAsync<T>(Func<Task<T>> probe, Func<T, bool> done, string what, TimeSpan? deadline = null)
    {
        var limit = deadline ?? Deadline;
        var started = TimeProvider.System.GetTimestamp();
        while (true)
        {
            var value = await probe();
            if (done(value))
            {
                return value;
            }

            if (TimeProvider.System.GetElapsedTime(started) > limit)
            {
                throw new TimeoutException($"Gave up waiting for {what} after {limit}; last value: {value}");
            }

            await Task.Delay(50);
        }
    }
}
