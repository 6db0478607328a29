import { TodoApp } from "@/components/todo-app";

// Read TODO_API_URL when serving, not when building: one build runs against any API.
export const dynamic = "force-dynamic";

export default function Page() {
  return <TodoApp apiUrl={process.env.TODO_API_URL ?? "http://localhost:8000"} />;
}
